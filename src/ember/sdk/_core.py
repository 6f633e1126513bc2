"""The SDK's I/O-free core: requests, response parsing and multi-step flows.

A flow is a generator that yields `Call`s (and receives the response) or
`Sleep`s (and receives None), and returns its result; `_sync.drive` and
`_async.drive` run it with httpx. So resume-on-410, waiting out 422 and
get-or-create are written once for both twins.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from collections.abc import Generator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel

from ember.wire.command import Command, CommandResponse
from ember.wire.common import NAME_PATTERN
from ember.wire.errors import (
    BadRequestError,
    EmberError,
    InvalidNameError,
    SandboxSnapshottingError,
    SandboxStoppedError,
    SandboxStoppingError,
    error_class,
)
from ember.wire.sandbox import PauseResponse, Sandbox, SandboxResponse
from ember.wire.session import Session, SessionResponse

from ._config import Config
from ._errors import error_from_response

M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")

TRANSITION_POLL_S = 0.5
TRANSITION_TIMEOUT_S = 300.0
Duration = float | int | timedelta


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    params: Mapping[str, Any] = field(default_factory=dict)
    json: Any = None
    content: bytes | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    stream: bool = False  # leave the body unread (NDJSON logs); error bodies are read anyway

    def request(self, client: httpx.Client | httpx.AsyncClient, config: Config) -> httpx.Request:
        params = {k: v for k, v in self.params.items() if v is not None}
        if config.team_id:
            params.setdefault("teamId", config.team_id)
        return client.build_request(
            self.method,
            self.path,
            params=params,
            json=self.json,
            content=self.content,
            headers=dict(self.headers),
        )


@dataclass(frozen=True)
class Sleep:
    seconds: float


Step = Call | Sleep
Flow = Generator[Step, Any, T]


def ms(duration: Duration) -> int:
    """Seconds (int or float) or a timedelta, as the wire's milliseconds."""
    seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
    return round(seconds * 1000)


def parse(response: httpx.Response, model: type[M]) -> M:
    if response.is_error:
        raise error_from_response(response)
    return model.model_validate_json(response.content)


def check(response: httpx.Response) -> None:
    if response.is_error:
        raise error_from_response(response)


def drop_none(values: Mapping[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in values.items() if v is not None}


# -- the state a Sandbox object keeps ----------------------------------------------


@dataclass
class SandboxState:
    """What a Sandbox handle knows; flows update it as sessions come and go."""

    sandbox: Sandbox
    session: Session | None
    routes: list[Any] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.sandbox.name

    def update(self, response: SandboxResponse) -> None:
        self.sandbox = response.sandbox
        if response.session is not None:
            self.session = response.session
        self.routes = list(response.routes)


def sandbox_path(name: str, suffix: str = "") -> str:
    """`/v2/sandboxes/{name}`, refusing a name that would read as another path."""
    if not NAME_PATTERN.fullmatch(name):
        raise InvalidNameError(f"{name!r} is not a sandbox name (1-128 of a-z A-Z 0-9 _ -)")
    return f"/v2/sandboxes/{name}{suffix}"


def snapshot_path(snapshot_id: str) -> str:
    if not NAME_PATTERN.fullmatch(snapshot_id):
        raise BadRequestError(f"{snapshot_id!r} is not a snapshot id")
    return f"/v2/sandboxes/snapshots/{snapshot_id}"


def get_sandbox(name: str, *, resume: bool = False) -> Call:
    return Call("GET", sandbox_path(name), params={"resume": "true" if resume else None})


def pause_or_resume(state: SandboxState, action: str) -> Call:
    """Ember's `POST …/sessions/{id}/pause` or `…/resume` of the handle's session."""
    if state.session is None:
        raise SandboxStoppedError(f"sandbox {state.name!r} has no session to {action}")
    return Call("POST", f"/v2/sandboxes/sessions/{state.session.id}/{action}")


def apply_pause_or_resume(state: SandboxState, response: httpx.Response) -> None:
    answer = parse(response, PauseResponse)
    state.sandbox, state.session = answer.sandbox, answer.session


def stoppable(session: Session | None) -> bool:
    """Whether a stop has something to do: a live session, or a paused one."""
    return session is not None and (
        session.status in ("running", "pending") or bool(session.paused)
    )


def resume_flow(state: SandboxState) -> Flow[None]:
    response = yield get_sandbox(state.name, resume=True)
    state.update(parse(response, SandboxResponse))


def wait_out_transition(session_id: str) -> Flow[None]:
    """Poll the session while it is stopping or snapshotting (as the reference's SDKs do)."""
    deadline = time.monotonic() + TRANSITION_TIMEOUT_S
    while time.monotonic() < deadline:
        yield Sleep(TRANSITION_POLL_S)
        response = yield Call("GET", f"/v2/sandboxes/sessions/{session_id}")
        if parse(response, SessionResponse).session.status not in ("stopping", "snapshotting"):
            return
    raise SandboxStoppingError(
        f"session {session_id} did not finish stopping in {TRANSITION_TIMEOUT_S:.0f} s"
    )


RESUMABLE = (SandboxStoppedError, SandboxStoppingError, SandboxSnapshottingError)


def with_session(state: SandboxState, build: Any) -> Flow[httpx.Response]:
    """Run a session-bound call, resuming the sandbox first or on 410 / 422 and retrying once.

    `build(session_id) -> Call`. The response is returned unparsed (but is
    not an error that resuming answers).
    """
    if state.session is None or state.session.status not in ("running", "pending"):
        yield from resume_flow(state)
    assert state.session is not None
    response: httpx.Response = yield build(state.session.id)
    if not response.is_error:
        return response
    error = error_from_response(response)
    if not isinstance(error, RESUMABLE):
        return response
    if isinstance(error, (SandboxStoppingError, SandboxSnapshottingError)):
        yield from wait_out_transition(state.session.id)
    yield from resume_flow(state)
    assert state.session is not None
    retried: httpx.Response = yield build(state.session.id)
    return retried


def get_or_create_flow(
    name: str, create_body: dict[str, Any]
) -> Flow[tuple[SandboxResponse, bool]]:
    """`get` by name (resuming); create on 404; on an expired snapshot, delete and create."""
    response = yield get_sandbox(name, resume=True)
    if response.status_code == 200:
        return parse(response, SandboxResponse), False
    error = error_from_response(response)
    if response.status_code == 410 and error.code == "snapshot_not_found":
        deleted = yield Call("DELETE", sandbox_path(name))
        if deleted.status_code not in (200, 404):
            raise error_from_response(deleted)
    elif response.status_code != 404:
        raise error
    created = yield Call("POST", "/v3/sandboxes", json={**create_body, "name": name})
    return parse(created, SandboxResponse), True


def pages(call: Call, key: str) -> Flow[tuple[list[Any], str | None]]:
    response = yield call
    if response.is_error:
        raise error_from_response(response)
    body = response.json()
    return body[key], body["pagination"].get("next")


# -- commands ------------------------------------------------------------------------


def run_call(
    session_id: str,
    command: str,
    args: Iterable[str],
    *,
    cwd: str | None,
    env: Mapping[str, str] | None,
    sudo: bool,
    timeout: Duration | None,
    wait: bool,
    stdin: bool = False,
) -> Call:
    body = drop_none(
        {
            "command": command,
            "args": list(args),
            "cwd": cwd,
            "env": dict(env) if env else None,
            "sudo": sudo,
            "timeout": ms(timeout) if timeout is not None else None,
            "wait": wait or None,
            "logs": wait or None,
            "stdin": stdin or None,
        }
    )
    return Call("POST", f"/v2/sandboxes/sessions/{session_id}/cmd", json=body, stream=wait)


@dataclass(frozen=True)
class LogLine:
    """One NDJSON line of a command's stream."""

    stream: str  # "stdout" | "stderr"
    data: str


def parse_stream_line(line: str) -> LogLine | Command | None:
    """A log line, the (first or final) command, or None for blank lines."""
    if not line.strip():
        return None
    item = json.loads(line)
    if "command" in item:
        return CommandResponse.model_validate(item).command
    if item.get("stream") == "error":
        data = item.get("data") or {}
        raise _stream_error(data)
    return LogLine(str(item["stream"]), str(item["data"]))


def _stream_error(data: dict[str, Any]) -> EmberError:
    cls = error_class(str(data.get("code", ""))) or EmberError
    return cls(str(data.get("message", "the stream failed")))


# -- files ---------------------------------------------------------------------------


FileContent = bytes | str
Files = Mapping[str, FileContent] | Iterable[tuple[str, FileContent, int]]


def tar_gz(items: Iterable[tuple[str, FileContent, int]]) -> bytes:
    """A gzip tar of `(path, content, mode)` items; absolute paths become relative to `/`."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=1) as tar:
        for path, content, mode in items:
            data = content.encode() if isinstance(content, str) else content
            info = tarfile.TarInfo(path.lstrip("/"))
            info.size, info.mode, info.mtime = len(data), mode, int(time.time())
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()
