"""Routes of sessions: list, get, stop, pause, resume, extend-timeout, snapshot; commands; files."""

from __future__ import annotations

import base64
import json
from typing import Annotated, TypeVar

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import ValidationError

from ember.control import ControlPlane
from ember.control.states import PAUSED, raise_unless_running
from ember.control.views import command_view, routes, sandbox_view, session_view, snapshot_view
from ember.store import models
from ember.wire import errors
from ember.wire.base import RequestModel
from ember.wire.command import (
    CommandList,
    CommandResponse,
    KillRequest,
    RunCommandRequest,
    StdinRequest,
)
from ember.wire.common import Pagination
from ember.wire.files import FileListResponse, FileStatResponse, file_stat
from ember.wire.network import parse_network_policy
from ember.wire.sandbox import PauseResponse
from ember.wire.session import (
    ExtendTimeoutRequest,
    SessionList,
    SessionResponse,
    SessionSnapshotResponse,
    StopResponse,
)
from ember.wire.snapshot import SnapshotRequest

from .deps import Caller, Plane
from .ndjson import ndjson_response

router = APIRouter()
M = TypeVar("M", bound=RequestModel)
SESSION = "/v2/sandboxes/sessions/{session_id}"


class MkdirRequest(RequestModel):
    path: str
    cwd: str | None = None
    recursive: bool = False


class ReadRequest(RequestModel):
    path: str
    cwd: str | None = None


class RemoveRequest(RequestModel):
    path: str
    cwd: str | None = None
    recursive: bool = False


class RenameRequest(RequestModel):
    src: str
    dst: str
    cwd: str | None = None


async def optional_body(request: Request, model: type[M]) -> M:
    """Parse a body that clients may leave empty."""
    raw = await request.body()
    try:
        return model.model_validate(json.loads(raw) if raw.strip() else {})
    except (ValueError, ValidationError) as exc:
        raise errors.BadRequestError(f"invalid body: {exc}") from None


@router.get("/v2/sandboxes/sessions", response_model=SessionList)
async def list_sessions(
    control: Plane,
    caller: Caller,
    name: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    sort_order: Annotated[str | None, Query(alias="sortOrder")] = None,
) -> SessionList:
    page = await control.sessions.query(
        caller, sandbox_name=name, limit=limit, cursor=cursor, sort_order=sort_order
    )
    return SessionList(
        sessions=[session_view(row, sandbox_name) for row, sandbox_name in page.items],
        pagination=Pagination(count=len(page.items), next=page.next_cursor),
    )


@router.get(SESSION, response_model=SessionResponse)
async def get_session(session_id: str, control: Plane, caller: Caller) -> SessionResponse:
    session, sandbox = await control.sessions.get(caller, session_id)
    return SessionResponse(
        session=session_view(session, sandbox.name), routes=routes(sandbox, control.settings)
    )


@router.post(SESSION + "/stop", response_model=StopResponse)
async def stop_session(session_id: str, control: Plane, caller: Caller) -> StopResponse:
    await control.load_session(caller, session_id)
    result = await control.stop_session(session_id)
    return StopResponse(
        session=session_view(result.session, result.sandbox.name),
        sandbox=sandbox_view(result.sandbox, result.session, control.settings),
        snapshot=snapshot_view(result.snapshot) if result.snapshot else None,
    )


@router.post(SESSION + "/pause", response_model=PauseResponse)
async def pause_session(session_id: str, control: Plane, caller: Caller) -> PauseResponse:
    """Ember: save a running microVM session's memory and end its processes."""
    return _paused_or_resumed(control, *await control.pauses.pause(caller, session_id))


@router.post(SESSION + "/resume", response_model=PauseResponse)
async def resume_session(session_id: str, control: Plane, caller: Caller) -> PauseResponse:
    """Ember: run a paused session again, as it was when it paused."""
    return _paused_or_resumed(control, *await control.pauses.resume(caller, session_id))


def _paused_or_resumed(
    control: ControlPlane, session: models.Session, sandbox: models.Sandbox
) -> PauseResponse:
    return PauseResponse(
        session=session_view(session, sandbox.name),
        sandbox=sandbox_view(sandbox, session, control.settings),
    )


@router.post(SESSION + "/extend-timeout", response_model=SessionResponse)
async def extend_timeout(
    session_id: str, body: ExtendTimeoutRequest, control: Plane, caller: Caller
) -> SessionResponse:
    session = await control.extend_timeout(caller, session_id, body.duration)
    return SessionResponse(session=session_view(session))


@router.post(SESSION + "/snapshot", response_model=SessionSnapshotResponse)
@router.post("/v3/sandboxes/sessions/{session_id}/snapshot", include_in_schema=False)
async def snapshot_session(
    session_id: str, request: Request, control: Plane, caller: Caller
) -> SessionSnapshotResponse:
    body = await optional_body(request, SnapshotRequest)
    session, _ = await control.load_session(caller, session_id)
    if session.status != PAUSED:  # a paused session's disk is as it paused
        raise_unless_running(session)
    result = await control.stop_session(
        session_id, snapshot="snapshot", expiration_ms=body.expiration
    )
    if result.snapshot is None:
        raise errors.InternalError(
            "the snapshot could not be written; the session's filesystem was kept"
        )
    return SessionSnapshotResponse(
        snapshot=snapshot_view(result.snapshot),
        session=session_view(result.session, result.sandbox.name),
    )


@router.post(SESSION + "/network-policy", response_model=SessionResponse)
async def network_policy(
    session_id: str, request: Request, control: Plane, caller: Caller
) -> SessionResponse:
    try:
        policy = parse_network_policy(json.loads(await request.body() or b"{}"))
    except (ValueError, ValidationError) as exc:
        raise errors.BadRequestError(f"invalid network policy: {exc}") from None
    session, sandbox = await control.set_network_policy(caller, session_id, policy)
    return SessionResponse(session=session_view(session, sandbox.name))


# -- commands ------------------------------------------------------------------


@router.post(SESSION + "/cmd", response_model=CommandResponse)
async def run_command(
    session_id: str,
    body: RunCommandRequest,
    control: Plane,
    caller: Caller,
    wait: bool = False,
    logs: bool = False,
) -> Response:
    if wait or body.wait:
        request = body.model_copy(update={"wait": True, "logs": body.logs or logs})
        return ndjson_response(await control.commands.run_stream(caller, session_id, request))
    row = await control.commands.start(caller, session_id, body)
    return _json(CommandResponse(command=command_view(row)))


@router.get(SESSION + "/cmd", response_model=CommandList)
async def list_commands(session_id: str, control: Plane, caller: Caller) -> CommandList:
    return CommandList(
        commands=[command_view(row) for row in await control.commands.query(caller, session_id)]
    )


@router.get(SESSION + "/cmd/{cmd_id}", response_model=CommandResponse)
async def get_command(
    session_id: str, cmd_id: str, control: Plane, caller: Caller, wait: bool = False
) -> CommandResponse:
    return CommandResponse(
        command=command_view(await control.commands.get(caller, session_id, cmd_id, wait=wait))
    )


@router.post(SESSION + "/cmd/{cmd_id}/kill", response_model=CommandResponse)
async def kill_command(
    session_id: str, cmd_id: str, request: Request, control: Plane, caller: Caller
) -> CommandResponse:
    body = await optional_body(request, KillRequest)
    return CommandResponse(
        command=command_view(await control.commands.kill(caller, session_id, cmd_id, body.signal))
    )


@router.get(SESSION + "/cmd/{cmd_id}/logs")
async def command_logs(
    session_id: str, cmd_id: str, control: Plane, caller: Caller
) -> StreamingResponse:
    return ndjson_response(await control.commands.logs(caller, session_id, cmd_id))


@router.post(SESSION + "/cmd/{cmd_id}/stdin")
async def command_stdin(
    session_id: str, cmd_id: str, request: Request, control: Plane, caller: Caller
) -> dict[str, int]:
    """Two forms. A JSON body is the official Python SDK's chunk `{data (base64),
    offset?, close?}`, stdin stays open unless `close`. Any other body is
    Ember's: the raw bytes, then stdin closes. Both answer the total written."""
    if request.headers.get("content-type", "").startswith("application/json"):
        chunk = await optional_body(request, StdinRequest)
        try:
            data = base64.b64decode(chunk.data, validate=True)
        except ValueError:
            raise errors.BadRequestError("stdin data must be base64") from None
        written = await control.commands.write_stdin_chunk(
            caller, session_id, cmd_id, data, chunk.offset, chunk.close
        )
    else:
        written = await control.commands.write_stdin(caller, session_id, cmd_id, request.stream())
    return {"bytesWritten": written, "bytes": written}


# -- files ----------------------------------------------------------------------


@router.post(SESSION + "/fs/mkdir")
async def mkdir(
    session_id: str, body: MkdirRequest, control: Plane, caller: Caller
) -> dict[str, object]:
    await control.files.mkdir(caller, session_id, body.path, body.cwd, body.recursive)
    return {}


@router.post(SESSION + "/fs/read")
async def read_file(
    session_id: str, body: ReadRequest, control: Plane, caller: Caller
) -> StreamingResponse:
    chunks = await control.files.read(caller, session_id, body.path, body.cwd)
    return StreamingResponse(chunks, media_type="application/octet-stream")


@router.post(SESSION + "/fs/stat", response_model=FileStatResponse)
async def stat_file(
    session_id: str, body: ReadRequest, control: Plane, caller: Caller
) -> FileStatResponse:
    """Ember extension: a path's kind, size, mode, owner and mtime (symlinks not followed)."""
    stat = await control.files.stat(caller, session_id, body.path, body.cwd)
    return FileStatResponse(stat=file_stat(stat))


@router.post(SESSION + "/fs/list", response_model=FileListResponse)
async def list_directory(
    session_id: str, body: ReadRequest, control: Plane, caller: Caller
) -> FileListResponse:
    """Ember extension: the entries of a directory, sorted by name."""
    entries = await control.files.listdir(caller, session_id, body.path, body.cwd)
    return FileListResponse(entries=[file_stat(e) for e in entries])


@router.post(SESSION + "/fs/remove")
async def remove_path(
    session_id: str, body: RemoveRequest, control: Plane, caller: Caller
) -> dict[str, object]:
    """Ember extension: remove a file, symlink or (with `recursive`) a directory tree."""
    await control.files.remove(caller, session_id, body.path, body.cwd, body.recursive)
    return {}


@router.post(SESSION + "/fs/rename")
async def rename_path(
    session_id: str, body: RenameRequest, control: Plane, caller: Caller
) -> dict[str, object]:
    """Ember extension: rename (move) a path inside the sandbox."""
    await control.files.rename(caller, session_id, body.src, body.dst, body.cwd)
    return {}


@router.post(SESSION + "/fs/write")
async def write_files(
    session_id: str,
    request: Request,
    control: Plane,
    caller: Caller,
    x_cwd: Annotated[str | None, Header()] = None,
) -> dict[str, object]:
    await control.files.write(caller, session_id, x_cwd, request.stream())
    return {}


def _json(model: CommandResponse) -> Response:
    return Response(model.model_dump_json(), media_type="application/json")
