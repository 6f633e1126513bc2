"""Routes of sandboxes: create, list, get (resume), update, delete, fork."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from ember.control.sandboxes import SandboxState
from ember.control.views import routes, sandbox_view, session_view
from ember.wire import errors
from ember.wire.common import Pagination, check_name
from ember.wire.sandbox import (
    CreateSandboxRequest,
    ForkSandboxRequest,
    SandboxList,
    SandboxResponse,
    UpdateSandboxRequest,
)

from .deps import Caller, Plane

router = APIRouter()
RESERVED_NAMES = frozenset({"sessions", "snapshots"})
# Vercel's CLI creates and forks with the private `__interactive: true` and aborts unless the new
# session reports an `interactivePort`. It never dials that port (its terminal goes through
# POST .../interactive), so Ember answers such a request with this fixed, reserved number.
INTERACTIVE_PORT = 65535


def respond(control: Plane, state: SandboxState) -> SandboxResponse:
    return SandboxResponse(
        sandbox=sandbox_view(state.sandbox, state.session, control.settings),
        session=session_view(state.session, state.sandbox.name) if state.session else None,
        routes=routes(state.sandbox, control.settings),
        resumed=state.resumed or None,
    )


def _interactive(response: SandboxResponse, raw_body: Any) -> SandboxResponse:
    if isinstance(raw_body, dict) and raw_body.get("__interactive") is True and response.session:
        response.session.interactive_port = INTERACTIVE_PORT
    return response


def _checked_name(name: str) -> str:
    try:
        return check_name(name)
    except ValueError as exc:
        raise errors.InvalidNameError(str(exc)) from None


@router.post("/v2/sandboxes", response_model=SandboxResponse)
@router.post("/v3/sandboxes", response_model=SandboxResponse, include_in_schema=False)
async def create_sandbox(
    body: CreateSandboxRequest, request: Request, control: Plane, caller: Caller
) -> SandboxResponse:
    caller.check_scope(team_id=None, project=body.project_id)
    if body.name in RESERVED_NAMES:
        raise errors.InvalidNameError(f"{body.name!r} is reserved by the API's paths")
    state = await control.sandboxes.create(caller, body)
    return _interactive(respond(control, state), await request.json())


@router.get("/v2/sandboxes", response_model=SandboxList)
async def list_sandboxes(
    control: Plane,
    caller: Caller,
    limit: int | None = None,
    cursor: str | None = None,
    sort_by: Annotated[str | None, Query(alias="sortBy")] = None,
    sort_order: Annotated[str | None, Query(alias="sortOrder")] = None,
    name_prefix: Annotated[str | None, Query(alias="namePrefix")] = None,
    tags: Annotated[list[str] | None, Query()] = None,
) -> SandboxList:
    page = await control.sandboxes.query(
        caller,
        limit=limit,
        cursor=cursor,
        sort_by=sort_by,
        sort_order=sort_order,
        name_prefix=name_prefix,
        tags=tags or [],
    )
    return SandboxList(
        sandboxes=[sandbox_view(s.sandbox, s.session, control.settings) for s in page.items],
        pagination=Pagination(count=len(page.items), next=page.next_cursor),
    )


@router.get("/v2/sandboxes/{name}", response_model=SandboxResponse)
async def get_sandbox(
    name: str, control: Plane, caller: Caller, resume: bool = False
) -> SandboxResponse:
    return respond(control, await control.sandboxes.get(caller, _checked_name(name), resume=resume))


@router.patch("/v2/sandboxes/{name}", response_model=SandboxResponse)
async def update_sandbox(
    name: str, body: UpdateSandboxRequest, control: Plane, caller: Caller
) -> SandboxResponse:
    return respond(control, await control.sandboxes.update(caller, _checked_name(name), body))


@router.delete("/v2/sandboxes/{name}", response_model=SandboxResponse)
async def delete_sandbox(
    name: str,
    control: Plane,
    caller: Caller,
    delete_orphan_snapshots: Annotated[bool, Query(alias="deleteOrphanSnapshots")] = False,
) -> SandboxResponse:
    state = await control.sandboxes.delete(
        caller, _checked_name(name), delete_snapshots=delete_orphan_snapshots
    )
    return respond(control, state)


@router.post("/v2/sandboxes/{name}/fork", response_model=SandboxResponse)
@router.post("/v3/sandboxes/{name}/fork", response_model=SandboxResponse, include_in_schema=False)
async def fork_sandbox(
    name: str, body: ForkSandboxRequest, request: Request, control: Plane, caller: Caller
) -> SandboxResponse:
    if body.name in RESERVED_NAMES:
        raise errors.InvalidNameError(f"{body.name!r} is reserved by the API's paths")
    state = await control.sandboxes.fork(caller, _checked_name(name), body)
    return _interactive(respond(control, state), await request.json())
