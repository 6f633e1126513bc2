"""Request dependencies: the control plane and the caller's project."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Query, Request

from ember.control import ControlPlane, Principal


def plane(request: Request) -> ControlPlane:
    control: ControlPlane = request.app.state.plane
    return control


async def principal(
    control: Annotated[ControlPlane, Depends(plane)],
    authorization: Annotated[str | None, Header()] = None,
    team_id: Annotated[str | None, Query(alias="teamId")] = None,
    project_id: Annotated[str | None, Query(alias="projectId")] = None,
    project: Annotated[str | None, Query()] = None,
) -> Principal:
    caller = await control.auth.verify(authorization)
    caller.check_scope(team_id=team_id, project=project_id or project)
    return caller


Plane = Annotated[ControlPlane, Depends(plane)]
Caller = Annotated[Principal, Depends(principal)]
