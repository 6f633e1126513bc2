"""Pause, resume and fork with memory: Ember's extension for microVM sessions.

A paused session keeps its disk and a file of its memory and device state,
and runs no processes; its timeout stands still (the rest of it counts again
from the resume). `resume` brings back the same session, processes and all.
A fork with memory starts a new sandbox from a copy of a running or paused
session's disk and memory; a running source pauses for the copy and runs on.

States: running → pausing → paused → resuming → running; a paused session
may also be stopped (its memory is dropped, its disk kept or snapshotted as
on any stop). `recover()` settles sessions a crash left pausing or resuming.
"""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session as DbSession

from ember.runtime import (
    EmberRuntimeError,
    ResourceUsage,
    SessionInfo,
    SessionSpec,
    SessionStatus,
)
from ember.store import models
from ember.wire import errors

from .auth import Principal
from .states import PAUSED, raise_unless_running

if TYPE_CHECKING:
    from .plane import ControlPlane

log = logging.getLogger("ember.control")
MICROVM = "microvm"


class Pauses:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def pause(
        self, principal: Principal, session_id: str
    ) -> tuple[models.Session, models.Sandbox]:
        """Pause a running microVM session; pausing a paused one changes nothing."""
        session, _ = await self.plane.load_session(principal, session_id)
        async with self.plane.lock(session.sandbox_id):
            session, sandbox = await self.plane.load_session(principal, session_id)
            if session.status == PAUSED:
                return session, sandbox
            raise_unless_running(session)
            _check_runtime(session, "paused")
            return await self._pause_locked(session_id)

    async def _pause_locked(self, session_id: str) -> tuple[models.Session, models.Sandbox]:
        await self.plane.set_status(session_id, "pausing")
        usage = None
        with contextlib.suppress(EmberRuntimeError, OSError):
            usage = await self.plane.runtime.usage(session_id)
        try:
            await self.plane.runtime.pause(session_id)
        except EmberRuntimeError as exc:
            running = False
            with contextlib.suppress(EmberRuntimeError):
                running = (
                    await self.plane.runtime.info(session_id)
                ).status is SessionStatus.RUNNING
            if running:
                await self.plane.set_status(session_id, "running")
                raise errors.RuntimeFailureError(f"the session could not pause: {exc}") from exc
            log.exception("session %s: pausing failed and it no longer runs", session_id)
            await self.plane.stop_locked(session_id)
            raise errors.RuntimeFailureError(
                f"the session could not pause and stopped instead: {exc}"
            ) from exc
        return await self.plane.db.run(
            lambda db: _mark(db, session_id, PAUSED, self.plane.clock(), usage)
        )

    async def resume(
        self, principal: Principal, session_id: str
    ) -> tuple[models.Session, models.Sandbox]:
        """Resume a paused session; resuming a running one changes nothing."""
        session, _ = await self.plane.load_session(principal, session_id)
        async with self.plane.lock(session.sandbox_id):
            session, sandbox = await self.plane.load_session(principal, session_id)
            if session.status == "running":
                return session, sandbox
            if session.status != PAUSED:
                raise_unless_running(session)
            await self.resume_locked(session_id)
            return await self.plane.load_session(principal, session_id)

    async def resume_locked(self, session_id: str) -> models.Session:
        """Resume a paused session (the caller holds its sandbox's lock)."""
        policy = await self.plane.db.run(lambda db: _sandbox_of(db, session_id).network_policy)
        await self.plane.set_status(session_id, "resuming")
        try:
            await self.plane.runtime.resume(session_id, policy)
        except EmberRuntimeError as exc:
            await self._settle_failed_resume(session_id)
            raise errors.RuntimeFailureError(f"the session could not resume: {exc}") from exc
        row, _ = await self.plane.db.run(
            lambda db: _mark(db, session_id, "running", self.plane.clock(), None, policy)
        )
        await self.plane.commands.watch_unfinished(session_id)
        self.plane.wake_reaper()
        return row

    async def _settle_failed_resume(self, session_id: str) -> None:
        """Still paused (its memory file kept): paused; otherwise stopped."""
        info = None
        with contextlib.suppress(EmberRuntimeError):
            info = await self.plane.runtime.info(session_id)
        if info is not None and info.status is SessionStatus.PAUSED:
            await self.plane.set_status(session_id, PAUSED)
        else:
            await self.plane.stop_locked(session_id)

    async def recover(self, row: models.Session) -> bool:
        """After a crash: settle a session left pausing or resuming by what the
        runtime holds. False when it must be stopped instead (the caller does)."""
        try:
            info = await self.plane.runtime.info(row.id)
        except EmberRuntimeError:
            return False
        if info.status is SessionStatus.PAUSED:
            log.info("session %s was %s: it is paused", row.id, row.status)
            await self.plane.set_status(row.id, PAUSED)
            return True
        if info.status is SessionStatus.RUNNING and await self.plane.answers(row.id):
            log.info("session %s was %s: it runs", row.id, row.status)
            await self.plane.db.run(
                lambda db: _mark(db, row.id, "running", self.plane.clock(), None)
            )
            return True
        return False

    async def fork_session(self, source_session_id: str, spec: SessionSpec) -> SessionInfo:
        """Start `spec` (a new sandbox's session) from a copy of the source session's
        disk and memory. A running source pauses for the copy and then resumes.
        The caller holds the source sandbox's lock."""
        source = await self.plane.db.run(lambda db: db.get(models.Session, source_session_id))
        assert source is not None
        was_running = source.status == "running"
        if was_running:
            await self._pause_locked(source_session_id)
        try:
            return await self.plane.runtime.fork(source_session_id, spec)
        finally:
            if was_running:
                await self.resume_locked(source_session_id)


def _check_runtime(session: models.Session, what: str) -> None:
    if session.runtime != MICROVM:
        raise errors.UnsupportedByRuntimeError(
            f"only microvm sessions can be {what} (this one runs in a {session.runtime}); "
            "create the sandbox with runtime 'microvm'"
        )


def check_forkable(session: models.Session | None) -> models.Session:
    """The source session of a fork with memory: a running or paused microVM."""
    if session is None or session.status not in ("running", PAUSED):
        raise errors.SandboxStoppedError(
            "a fork with memory needs the source's session running or paused"
        )
    _check_runtime(session, "forked with memory")
    return session


def _sandbox_of(db: DbSession, session_id: str) -> models.Sandbox:
    row = db.get(models.Session, session_id)
    assert row is not None
    box = db.get(models.Sandbox, row.sandbox_id)
    assert box is not None
    return box


def _mark(
    db: DbSession,
    session_id: str,
    status: str,
    at: int,
    usage: ResourceUsage | None,
    policy: dict[str, Any] | None = None,
) -> tuple[models.Session, models.Sandbox]:
    """Record a pause (usage so far, when) or a resume (the timeout's rest from now)."""
    row = db.get(models.Session, session_id)
    assert row is not None
    box = _sandbox_of(db, session_id)
    if status == PAUSED:
        row.paused_at = at
    elif row.paused_at is not None:
        if row.expires_at is not None:
            row.expires_at = at + max(0, row.expires_at - row.paused_at)
        row.paused_at = None
    if usage is not None:
        add_usage(row, usage)
    if policy is not None:
        row.network_policy = policy
    row.status, row.updated_at = status, at
    if box.current_session_id == session_id:
        box.status, box.status_updated_at = status, at
    box.updated_at = at
    return row, box


def add_usage(row: models.Session, usage: ResourceUsage) -> None:
    """Usage counters restart with each VM process: a session's are summed over them."""
    row.active_cpu_ms += usage.cpu_ms
    row.memory_peak_bytes = max(row.memory_peak_bytes, usage.memory_peak_bytes)
    row.ingress_bytes += usage.ingress_bytes
    row.egress_bytes += usage.egress_bytes
