"""Reading sessions: list and get, with live usage for running ones."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ember.runtime import EmberRuntimeError
from ember.store import models
from ember.wire import errors

from .auth import Principal
from .pagination import check_limit, check_order, decode_cursor, encode_cursor, keyset_by_created
from .pausing import add_usage

if TYPE_CHECKING:
    from .plane import ControlPlane


@dataclass(frozen=True)
class SessionPage:
    items: list[tuple[models.Session, str]]  # (session, sandbox name)
    next_cursor: str | None


class Sessions:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def get(
        self, principal: Principal, session_id: str
    ) -> tuple[models.Session, models.Sandbox]:
        session, sandbox = await self.plane.load_session(principal, session_id)
        if session.status == "running":
            with contextlib.suppress(EmberRuntimeError, OSError):
                # Added to what earlier VM processes used (before a pause); not stored.
                add_usage(session, await self.plane.runtime.usage(session_id))
        return session, sandbox

    async def query(
        self,
        principal: Principal,
        *,
        sandbox_name: str | None,
        limit: int | None,
        cursor: str | None,
        sort_order: str | None,
    ) -> SessionPage:
        size = check_limit(limit)
        order = check_order(sort_order)
        after = decode_cursor(cursor) if cursor else None

        def query(db: DbSession) -> list[tuple[models.Session, str]]:
            stmt = (
                select(models.Session, models.Sandbox.name)
                .join(models.Sandbox, models.Sandbox.id == models.Session.sandbox_id)
                .where(models.Session.project_id == principal.project_id)
            )
            if sandbox_name:
                stmt = stmt.where(models.Sandbox.name == sandbox_name)
            stmt = keyset_by_created(stmt, models.Session, after, order)
            return [(row, str(name)) for row, name in db.execute(stmt.limit(size + 1)).tuples()]

        rows = await self.plane.db.run(query)
        if sandbox_name and not rows and cursor is None:
            exists = await self.plane.db.run(
                lambda db: db.scalar(
                    select(models.Sandbox.id).where(
                        models.Sandbox.project_id == principal.project_id,
                        models.Sandbox.name == sandbox_name,
                    )
                )
            )
            if exists is None:
                raise errors.SandboxNotFoundError(
                    f"no sandbox named {sandbox_name!r} in this project"
                )
        next_cursor = None
        if len(rows) > size:
            rows = rows[:size]
            next_cursor = encode_cursor(rows[-1][0].created_at, rows[-1][0].id)
        return SessionPage(rows, next_cursor)
