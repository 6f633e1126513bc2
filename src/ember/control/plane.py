"""The control plane: owner of sandboxes, sessions, commands and snapshots.

Only this package writes the store. Session lifecycle (start, stop, the
automatic snapshot, timeouts) lives here; the resources' operations are in
sandboxes.py, commands.py, files.py and snapshots.py and reach this object
for shared state. One asyncio lock per sandbox serialises its transitions.

Session states: pending → running → stopping → (snapshotting →) stopped,
or failed when it could not start. A crash at any point is repaired by
`recover()` at the next start-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections import defaultdict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ember.runtime import (
    AgentClient,
    AgentUnavailableError,
    EmberRuntimeError,
    Resources,
    Runtime,
    SessionSpec,
    SessionStatus,
)
from ember.snapshots import LayerStore
from ember.store import Database, models
from ember.wire import errors

from .auth import Principal, TokenVerifier
from .commands import Commands
from .files import Files
from .ids import new_id
from .pausing import Pauses, add_usage
from .sandboxes import Sandboxes
from .sessions import Sessions
from .settings import Settings
from .snapshots import Snapshots
from .states import ACTIVE, ENDED, raise_unless_running
from .terminals import Terminals

log = logging.getLogger("ember.control")


def now_ms() -> int:
    return int(time.time() * 1000)


SnapshotMode = Literal["auto", "snapshot", "none"]


@dataclass(frozen=True)
class StopResult:
    session: models.Session
    sandbox: models.Sandbox
    snapshot: models.Snapshot | None


def _hostname(name: str) -> str:
    return re.sub(r"[^a-z0-9-]", "-", name.lower())[:63].strip("-") or "sandbox"


class ControlPlane:
    def __init__(
        self,
        settings: Settings,
        database: Database,
        runtime: Runtime,
        layers: LayerStore,
        image_id: str,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.settings = settings
        self.db = database
        self.runtime = runtime
        self.layers = layers
        self.image_id = image_id
        self.clock = clock
        self._locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        # Running sessions as last read, so session-bound calls skip the store.
        # Coherent because this object is the store's only writer: every
        # transition of a session or change of its sandbox forgets it here.
        self._running: dict[str, tuple[models.Session, models.Sandbox]] = {}
        # Exposed ports' targets by (sandbox key, port): (session id, host:port),
        # valid while that session is in _running, so they go stale with it.
        self._routes: dict[tuple[str, int], tuple[str, str]] = {}
        self._reaper_wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.auth = TokenVerifier(database)
        self.sandboxes = Sandboxes(self)
        self.sessions = Sessions(self)
        self.commands = Commands(self)
        self.files = Files(self)
        self.snapshots = Snapshots(self)
        self.terminals = Terminals(self)
        self.pauses = Pauses(self)

    # -- background work ----------------------------------------------------

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run background work that outlives a request; errors are logged, not lost."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)

        def done(t: asyncio.Task[Any]) -> None:
            self._tasks.discard(t)
            if not t.cancelled() and t.exception() is not None:
                log.error("background task %s failed", name, exc_info=t.exception())

        task.add_done_callback(done)
        return task

    async def start(self) -> None:
        """Repair what a crash left, then run the reaper and the snapshot sweeper."""
        await self.recover()
        self.spawn(self._reap_forever(), "reaper")
        self.spawn(self._sweep_snapshots_forever(), "snapshot-sweeper")
        self.spawn(self._watch_liveness_forever(), "liveness")

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(BaseException):
                await task
        await asyncio.to_thread(self.runtime.close)

    def lock(self, sandbox_id: str) -> asyncio.Lock:
        return self._locks[sandbox_id]

    def forget(self, sandbox_id: str) -> None:
        self._locks.pop(sandbox_id, None)
        self.forget_sandbox(sandbox_id)

    def forget_sandbox(self, sandbox_id: str) -> None:
        """Drop cached sessions of a sandbox whose configuration changed."""
        for session_id, (_, sandbox) in list(self._running.items()):
            if sandbox.id == sandbox_id:
                self._running.pop(session_id, None)

    def wake_reaper(self) -> None:
        self._reaper_wakeup.set()

    # -- lookups --------------------------------------------------------------

    async def load_session(
        self, principal: Principal, session_id: str
    ) -> tuple[models.Session, models.Sandbox]:
        def load(db: DbSession) -> tuple[models.Session, models.Sandbox] | None:
            row = db.get(models.Session, session_id)
            if row is None or row.project_id != principal.project_id:
                return None
            sandbox = db.get(models.Sandbox, row.sandbox_id)
            return (row, sandbox) if sandbox else None

        found = await self.db.run(load)
        if found is None:
            raise errors.SessionNotFoundError(f"no session {session_id!r} in this project")
        return found

    async def running_session(
        self, principal: Principal, session_id: str
    ) -> tuple[models.Session, models.Sandbox]:
        """The session, if it can take work now; else the reference's 410 / 422."""
        cached = self._running.get(session_id)
        if cached is not None and cached[0].project_id == principal.project_id:
            return cached
        session, sandbox = await self.load_session(principal, session_id)
        raise_unless_running(session)
        self._running[session_id] = (session, sandbox)
        return session, sandbox

    def agent(self, session: models.Session) -> AgentClient:
        return self.runtime.agent(session.id)

    # -- starting -------------------------------------------------------------

    async def start_session(self, sandbox_id: str, *, fork_of: str | None = None) -> models.Session:
        """Start a new session of a sandbox from its current snapshot (or image),
        or with `fork_of`, from a copy of that live session's memory and disk.

        The caller holds the sandbox's lock (and with `fork_of`, the source's).
        """
        now = self.clock()
        session_id = new_id("sbx")

        def begin(db: DbSession) -> tuple[models.Sandbox, models.Session, str | None]:
            sandbox = db.get(models.Sandbox, sandbox_id)
            if sandbox is None:
                raise errors.SandboxNotFoundError("the sandbox was deleted")
            layer_id = None
            if sandbox.current_snapshot_id:
                snapshot = db.get(models.Snapshot, sandbox.current_snapshot_id)
                if snapshot is None or snapshot.status != "created":
                    raise errors.SnapshotGoneError(
                        f"snapshot {sandbox.current_snapshot_id} of sandbox {sandbox.name!r} "
                        "expired or was deleted; delete the sandbox and create it again"
                    )
                snapshot.last_used_at = now
                if snapshot.expiration_ms:
                    snapshot.expires_at = now + snapshot.expiration_ms
                snapshot.updated_at = now
                layer_id = snapshot.layer_id
            session = models.Session(
                id=session_id,
                sandbox_id=sandbox.id,
                project_id=sandbox.project_id,
                status="pending",
                vcpus=sandbox.vcpus,
                memory=sandbox.memory,
                timeout_ms=sandbox.timeout_ms,
                runtime=sandbox.runtime,
                region=sandbox.region,
                cwd="/vercel/sandbox",
                persistent=sandbox.persistent,
                source_snapshot_id=sandbox.current_snapshot_id,
                network_policy=sandbox.network_policy,
                requested_at=now,
                started_at=None,
                expires_at=None,
                requested_stop_at=None,
                stopped_at=None,
                aborted_at=None,
                snapshotted_at=None,
                snapshot_id=None,
                created_at=now,
                updated_at=now,
            )
            db.add(session)
            sandbox.current_session_id = session_id
            sandbox.status = "pending"
            sandbox.status_updated_at = sandbox.updated_at = now
            return sandbox, session, layer_id

        sandbox, _, layer_id = await self.db.run(begin)
        spec = SessionSpec(
            session_id=session_id,
            image_id=sandbox.image_id,
            top_layer=layer_id,
            resources=Resources(
                vcpus=sandbox.vcpus, memory_mib=sandbox.memory, disk_mib=self.settings.disk_mib
            ),
            hostname=_hostname(sandbox.name),
            network_policy=sandbox.network_policy,
            runtime=sandbox.runtime,
        )
        try:
            if fork_of is not None:
                info = await self.pauses.fork_session(fork_of, spec)
            else:
                info = await self.runtime.start(spec)
        except EmberRuntimeError as exc:
            await self._mark_failed(session_id, sandbox_id)
            raise errors.RuntimeFailureError(f"the session could not start: {exc}") from exc
        except BaseException:
            await self._mark_failed(session_id, sandbox_id)
            raise

        def started(db: DbSession) -> models.Session:
            row = db.get(models.Session, session_id)
            box = db.get(models.Sandbox, sandbox_id)
            assert row is not None and box is not None
            at = self.clock()
            row.status, row.started_at, row.cwd = "running", at, info.cwd
            row.expires_at = at + row.timeout_ms
            row.updated_at = at
            box.status, box.status_updated_at, box.updated_at = "running", at, at
            return row

        row = await self.db.run(started)
        self.wake_reaper()
        return row

    async def _mark_failed(self, session_id: str, sandbox_id: str) -> None:
        def failed(db: DbSession) -> None:
            at = self.clock()
            row = db.get(models.Session, session_id)
            if row:
                row.status, row.aborted_at, row.updated_at = "failed", at, at
            box = db.get(models.Sandbox, sandbox_id)
            if box:
                box.status, box.status_updated_at, box.updated_at = "failed", at, at

        await self.db.run(failed)

    # -- stopping ---------------------------------------------------------------

    async def stop_session(
        self,
        session_id: str,
        *,
        snapshot: SnapshotMode = "auto",
        expiration_ms: int | None = None,
    ) -> StopResult:
        """Stop a session, and snapshot its filesystem per `snapshot`.

        "auto": when the sandbox is persistent (creation method "stop");
        "snapshot": always (an explicit snapshot); "none": never.
        Idempotent for an ended session.
        """
        session = await self.db.run(lambda db: db.get(models.Session, session_id))
        if session is None:
            raise errors.SessionNotFoundError(f"no session {session_id!r}")
        async with self.lock(session.sandbox_id):
            return await self._stop_locked(session_id, snapshot, expiration_ms)

    async def stop_locked(self, session_id: str) -> StopResult:
        """Stop as the sandbox says (snapshot when persistent); the caller holds its lock."""
        return await self._stop_locked(session_id, "auto", None)

    async def _stop_locked(
        self, session_id: str, mode: SnapshotMode, expiration_ms: int | None
    ) -> StopResult:
        self._running.pop(session_id, None)

        def begin(db: DbSession) -> tuple[models.Session, models.Sandbox, str | None]:
            row = db.get(models.Session, session_id)
            box = db.get(models.Sandbox, row.sandbox_id) if row else None
            assert row is not None and box is not None
            if row.status in ENDED:
                if mode == "snapshot":
                    raise errors.SandboxStoppedError(
                        "the session has stopped; resume the sandbox first"
                    )
                return row, box, None
            at = self.clock()
            wants = {"auto": "stop" if row.persistent else None, "none": None}.get(mode, mode)
            row.status, row.requested_stop_at, row.updated_at = "stopping", at, at
            row.snapshot_id = new_id("snap") if wants else None
            box.status, box.status_updated_at = "stopping", at
            return row, box, wants

        row, box, wants = await self.db.run(begin)
        self._running.pop(session_id, None)  # a request may have cached it meanwhile
        if row.status in ENDED:
            snap = await self.db.run(
                lambda db: db.get(models.Snapshot, row.snapshot_id) if row.snapshot_id else None
            )
            return StopResult(row, box, snap)
        return await self._finish_stop(row, wants, expiration_ms)

    async def _finish_stop(
        self, row: models.Session, method: str | None, expiration_ms: int | None
    ) -> StopResult:
        """Stop processes, freeze or discard the writable layer, record the outcome."""
        session_id = row.id
        self._running.pop(session_id, None)
        usage = None
        if session_id in await self.runtime.sessions():
            with contextlib.suppress(EmberRuntimeError, OSError):
                usage = await self.runtime.usage(session_id)
            await self.runtime.stop(session_id)
        snapshot_id = row.snapshot_id if method else None
        frozen_size: int | None = None
        if snapshot_id:
            await self.set_status(session_id, "snapshotting")
            if self.layers.exists(snapshot_id):
                frozen_size = self.layers.get(snapshot_id).size_bytes  # frozen before a crash
            elif session_id in await self.runtime.sessions():
                try:
                    frozen_size = (await self.runtime.freeze(session_id, snapshot_id)).size_bytes
                except EmberRuntimeError:
                    log.exception(
                        "session %s: snapshot failed; its filesystem is discarded", session_id
                    )
        if session_id in await self.runtime.sessions():
            await self.runtime.discard(session_id)

        def finish(db: DbSession) -> StopResult:
            at = self.clock()
            session = db.get(models.Session, session_id)
            assert session is not None
            box = db.get(models.Sandbox, session.sandbox_id)
            assert box is not None
            snapshot = None
            if snapshot_id and frozen_size is not None:
                expiration = (
                    expiration_ms if expiration_ms is not None else self._snapshot_expiration(box)
                )
                snapshot = models.Snapshot(
                    id=snapshot_id,
                    project_id=box.project_id,
                    sandbox_id=box.id,
                    sandbox_name=box.name,
                    source_session_id=session_id,
                    parent_id=session.source_snapshot_id,
                    layer_id=snapshot_id,
                    image_id=box.image_id,
                    status="created",
                    region=session.region,
                    size_bytes=frozen_size,
                    creation_method=method or "stop",
                    expiration_ms=expiration or None,
                    expires_at=(at + expiration) if expiration else None,
                    last_used_at=None,
                    created_at=at,
                    updated_at=at,
                )
                db.add(snapshot)
                session.snapshotted_at = at
                if box.persistent:
                    box.current_snapshot_id = snapshot_id
            else:
                session.snapshot_id = None
            if usage is not None:
                add_usage(session, usage)
            session.status, session.stopped_at, session.updated_at = "stopped", at, at
            session.paused_at = None
            if session.started_at:
                box.total_duration_ms += at - session.started_at
            box.total_active_cpu_ms += session.active_cpu_ms
            box.total_ingress_bytes += session.ingress_bytes
            box.total_egress_bytes += session.egress_bytes
            if box.current_session_id == session_id:
                box.status, box.status_updated_at = "stopped", at
            box.updated_at = at
            for command in db.scalars(
                select(models.Command).where(
                    models.Command.session_id == session_id, models.Command.exit_code.is_(None)
                )
            ):
                command.exit_code, command.duration_ms = 137, at - command.started_at
            return StopResult(session, box, snapshot)

        result = await self.db.run(finish)
        self._running.pop(session_id, None)
        if result.snapshot is not None:
            await self.snapshots.apply_retention(result.sandbox.id)
        return result

    def _snapshot_expiration(self, box: models.Sandbox) -> int:
        keep = box.keep_last_snapshots or {}
        if keep.get("expiration") is not None:
            return int(keep["expiration"])
        if box.snapshot_expiration_ms is not None:
            return box.snapshot_expiration_ms
        return self.settings.default_snapshot_expiration_ms

    async def set_status(self, session_id: str, status: str) -> None:
        self._running.pop(session_id, None)

        def update(db: DbSession) -> None:
            row = db.get(models.Session, session_id)
            assert row is not None
            at = self.clock()
            row.status, row.updated_at = status, at
            box = db.get(models.Sandbox, row.sandbox_id)
            if box and box.current_session_id == session_id:
                box.status, box.status_updated_at = status, at

        await self.db.run(update)

    async def route_target(self, sandbox_key: str, port: int) -> str:
        """`host:port` of a sandbox's exposed port, for the router (routes are public: no token)."""
        cached = self._routes.get((sandbox_key, port))
        if cached is not None:
            if cached[0] in self._running:
                return cached[1]
            self._routes.pop((sandbox_key, port), None)

        def find(db: DbSession) -> tuple[models.Sandbox, models.Session | None] | None:
            box = db.get(models.Sandbox, f"sbxn_{sandbox_key}")
            if box is None or port not in box.ports:
                return None
            session = (
                db.get(models.Session, box.current_session_id) if box.current_session_id else None
            )
            return box, session

        found = await self.db.run(find)
        if found is None:
            raise errors.NotFoundError("no sandbox exposes this route")
        box, session = found
        if session is None or session.status != "running":
            raise errors.SandboxStoppedError(
                "the sandbox is stopped; resume it to serve this route"
            )
        address = self.runtime.address(session.id)
        if address is None:
            raise errors.NotImplementedYetError(
                "routes need networking: emberd runs with --no-network"
            )
        target = f"{address}:{port}"
        self._running.setdefault(session.id, (session, box))
        self._routes[(sandbox_key, port)] = (session.id, target)
        return target

    async def set_network_policy(
        self, principal: Principal, session_id: str, policy: dict[str, Any]
    ) -> tuple[models.Session, models.Sandbox]:
        """Change a running session's network policy (and its sandbox's) at once."""
        session, _ = await self.running_session(principal, session_id)
        try:
            await self.runtime.set_network_policy(session_id, policy)
        except EmberRuntimeError as exc:
            raise errors.NotImplementedYetError(
                f"{exc}; emberd runs with --no-network, so sessions have no network to change"
            ) from exc

        def store(db: DbSession) -> tuple[models.Session, models.Sandbox]:
            row = db.get(models.Session, session_id)
            box = db.get(models.Sandbox, session.sandbox_id)
            assert row is not None and box is not None
            row.network_policy = box.network_policy = policy
            row.updated_at = box.updated_at = self.clock()
            return row, box

        result = await self.db.run(store)
        self._running.pop(session_id, None)
        return result

    async def extend_timeout(
        self, principal: Principal, session_id: str, duration_ms: int
    ) -> models.Session:
        await self.running_session(principal, session_id)

        def extend(db: DbSession) -> models.Session:
            row = db.get(models.Session, session_id)
            assert row is not None
            raise_unless_running(row)
            if row.timeout_ms + duration_ms > self.settings.max_timeout_ms:
                raise errors.BadRequestError(
                    f"the session's timeout would become {row.timeout_ms + duration_ms} ms; "
                    f"the maximum is {self.settings.max_timeout_ms} ms"
                )
            row.timeout_ms += duration_ms
            row.expires_at = (row.started_at or self.clock()) + row.timeout_ms
            row.updated_at = self.clock()
            return row

        row = await self.db.run(extend)
        self._running.pop(session_id, None)
        self.wake_reaper()
        return row

    # -- the reaper -------------------------------------------------------------

    async def _reap_forever(self) -> None:
        while True:
            now = self.clock()
            expiring: list[tuple[str, int]] = await self.db.run(
                lambda db: [
                    (session_id, expires_at)
                    for session_id, expires_at in db.execute(
                        select(models.Session.id, models.Session.expires_at).where(
                            models.Session.status == "running",
                            models.Session.expires_at.is_not(None),
                        )
                    ).all()
                    if expires_at is not None
                ]
            )
            for session_id, expires_at in expiring:
                if expires_at <= now:
                    log.info("session %s reached its timeout", session_id)
                    self.spawn(self.stop_session(session_id), f"timeout-{session_id}")
            future = [e for _, e in expiring if e > now]
            delay = (min(future) - now) / 1000 if future else None
            self._reaper_wakeup.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._reaper_wakeup.wait(), delay)

    async def _watch_liveness_forever(self) -> None:
        """Stop (as a stop does: snapshot when persistent) sessions that ended by
        themselves, so the API reports them stopped with their files kept."""
        while True:
            await asyncio.sleep(self.settings.liveness_interval_s)
            running = await self.db.run(
                lambda db: list(
                    db.scalars(select(models.Session.id).where(models.Session.status == "running"))
                )
            )
            for session_id in running:
                with contextlib.suppress(EmberRuntimeError, OSError):
                    if not await self.runtime.alive(session_id):
                        log.warning("session %s ended by itself", session_id)
                        self.spawn(self.stop_if_dead(session_id), f"ended-{session_id}")

    async def _sweep_snapshots_forever(self) -> None:
        while True:
            await self.snapshots.expire_due()
            await asyncio.sleep(self.settings.snapshot_sweep_interval_s)

    # -- recovery ----------------------------------------------------------------

    async def recover(self) -> None:
        """After a crash or restart: adopt live sessions, finish interrupted stops."""
        self.layers.clean_staging()
        in_runtime = set(await self.runtime.sessions())
        active = await self.db.run(
            lambda db: list(
                db.scalars(select(models.Session).where(models.Session.status.in_(ACTIVE)))
            )
        )
        known = {row.id for row in active}
        adopted: dict[str, dict[str, Any]] = {}
        for row in active:
            if row.status == "running" and row.id in in_runtime and await self.answers(row.id):
                log.info("adopted running session %s", row.id)
                adopted[row.id] = dict(row.network_policy or {})
                await self.commands.watch_unfinished(row.id)
                continue
            if row.status in ("pausing", "resuming") and await self.pauses.recover(row):
                settled = await self.db.run(partial(_get_session, session_id=row.id))
                if settled is not None and settled.status == "running":
                    adopted[row.id] = dict(row.network_policy or {})
                    await self.commands.watch_unfinished(row.id)
                continue
            log.info("finishing the interrupted stop of session %s (%s)", row.id, row.status)
            async with self.lock(row.sandbox_id):
                method = (
                    "stop"
                    if row.snapshot_id or (row.persistent and row.status != "pending")
                    else None
                )
                if method and not row.snapshot_id:
                    row.snapshot_id = await self._plan_snapshot_id(row.id)
                await self._finish_stop(row, method, None)
        for orphan in in_runtime - known:
            ended = await self.db.run(partial(_get_session, session_id=orphan))
            if ended is None or ended.status in ENDED:
                log.info("discarding orphaned session %s", orphan)
                await self.runtime.discard(orphan)
        await self.runtime.restore_networks(adopted)
        await self.snapshots.collect_garbage()

    async def _plan_snapshot_id(self, session_id: str) -> str:
        snapshot_id = new_id("snap")

        def plan(db: DbSession) -> None:
            row = db.get(models.Session, session_id)
            assert row is not None
            row.snapshot_id = snapshot_id

        await self.db.run(plan)
        return snapshot_id

    async def stop_if_dead(self, session_id: str) -> None:
        """Stop a running session whose agent no longer answers (keeping its
        filesystem); a session that meanwhile paused or stopped is left alone."""
        session = await self.db.run(partial(_get_session, session_id=session_id))
        if session is None:
            return
        async with self.lock(session.sandbox_id):
            session = await self.db.run(partial(_get_session, session_id=session_id))
            if session is None or session.status != "running" or await self.answers(session_id):
                return
            log.warning("session %s: the agent does not answer; stopping it", session_id)
            await self._stop_locked(session_id, "auto", None)

    async def answers(self, session_id: str) -> bool:
        try:
            info = await self.runtime.info(session_id)
            if info.status is not SessionStatus.RUNNING:
                return False
            await asyncio.wait_for(self.runtime.agent(session_id).hello(), 5)
        except (EmberRuntimeError, AgentUnavailableError, TimeoutError, OSError):
            return False
        return True


def _get_session(db: DbSession, *, session_id: str) -> models.Session | None:
    return db.get(models.Session, session_id)
