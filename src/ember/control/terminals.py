"""Interactive terminals: one-time tickets, and the agent side of a terminal."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ember.runtime import Terminal
from ember.wire import errors

from .agent_calls import agent_errors
from .auth import Principal

if TYPE_CHECKING:
    from .plane import ControlPlane

TICKET_TTL_S = 60.0
LOGIN_SHELL = "/bin/bash"


@dataclass(frozen=True)
class Ticket:
    project_id: str
    session_id: str
    expires: float


def _start_options(
    start: Mapping[str, Any],
) -> tuple[list[str], dict[str, str], str | None, int, int]:
    """The reference's `start` message: command, args, env as K=V strings, cwd, cols, rows."""
    command = start.get("command") or ""
    args = start.get("args") or []
    env_items = start.get("env") or []
    if (
        not isinstance(command, str)
        or not isinstance(args, list)
        or not all(isinstance(a, str) for a in args)
    ):
        raise errors.BadRequestError("start: command must be a string and args a list of strings")
    if not isinstance(env_items, list) or not all(
        isinstance(e, str) and "=" in e for e in env_items
    ):
        raise errors.BadRequestError("start: env must be a list of NAME=value strings")
    cwd = start.get("cwd")
    if cwd is not None and not isinstance(cwd, str):
        raise errors.BadRequestError("start: cwd must be a string")
    # 0 (a client that could not tell its size) means the usual 80x24.
    cols, rows = start.get("cols") or 80, start.get("rows") or 24
    if not all(
        isinstance(n, int) and not isinstance(n, bool) and 0 < n <= 10_000 for n in (cols, rows)
    ):
        raise errors.BadRequestError("start: cols and rows must be positive integers")
    # An empty command is the user's login shell (the reference's CLI sends that).
    argv = [command, *args] if command else [LOGIN_SHELL, *(args or ["--login"])]
    env = dict(item.split("=", 1) for item in env_items)
    return argv, env, cwd, cols, rows


class Terminals:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self._tickets: dict[str, Ticket] = {}

    async def ticket(self, principal: Principal, session_id: str) -> str:
        """A single-use token for the WebSocket, valid for a minute."""
        await self.plane.running_session(principal, session_id)
        now = time.monotonic()
        self._tickets = {k: t for k, t in self._tickets.items() if t.expires > now}
        token = secrets.token_urlsafe(24)
        self._tickets[token] = Ticket(principal.project_id, session_id, now + TICKET_TTL_S)
        return token

    def redeem(self, token: str, session_id: str) -> Ticket:
        ticket = self._tickets.pop(token, None)
        if ticket is None or ticket.expires < time.monotonic() or ticket.session_id != session_id:
            raise errors.UnauthorizedError("the terminal's token is unknown, used or expired")
        return ticket

    async def attach(self, ticket: Ticket, start: Mapping[str, Any]) -> Terminal:
        argv, env, cwd, cols, rows = _start_options(start)
        principal = Principal(ticket.project_id, "", "")
        session, sandbox = await self.plane.running_session(principal, ticket.session_id)
        with agent_errors(self.plane, session):
            return await self.plane.agent(session).terminal(
                argv, cwd=cwd, env={**sandbox.env, **env}, cols=cols, rows=rows
            )
