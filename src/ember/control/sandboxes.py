"""Sandboxes: create, get (and resume), list, update, delete, fork."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from sqlalchemy import and_, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session as DbSession

from ember.store import models
from ember.wire import errors
from ember.wire.sandbox import CreateSandboxRequest, ForkSandboxRequest, UpdateSandboxRequest

from .auth import Principal
from .ids import new_id, new_sandbox_name
from .pagination import check_limit, decode_cursor, encode_cursor
from .pausing import check_forkable
from .settings import ISOLATION, LEGACY_RUNTIMES
from .states import ACTIVE, HELD, PAUSED

if TYPE_CHECKING:
    from .plane import ControlPlane

MEMORY_MIB_PER_VCPU = 2048
LAYER_FORMAT = {"container": "ext4", "microvm": "qcow2"}  # what each runtime's snapshots hold
SORT_COLUMNS = {
    "createdAt": models.Sandbox.created_at,
    "name": models.Sandbox.name,
    "statusUpdatedAt": models.Sandbox.status_updated_at,
}


@dataclass(frozen=True)
class SandboxState:
    sandbox: models.Sandbox
    session: models.Session | None
    resumed: bool = False


@dataclass(frozen=True)
class SandboxPage:
    items: list[SandboxState]
    next_cursor: str | None


def parse_tag_filters(tags: list[str]) -> dict[str, str]:
    filters = {}
    for tag in tags:
        key, sep, value = tag.partition(":")
        if not sep or not key:
            raise errors.BadRequestError(f"tag filter {tag!r} must look like key:value")
        filters[key] = value
    return filters


class Sandboxes:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    # -- helpers --------------------------------------------------------------

    def _isolation(self, runtime: str | None) -> str:
        """Ember's extension of `runtime`: "container" or "microvm" picks the
        isolation; the reference's language runtimes are image names."""
        if runtime in ISOLATION:
            assert runtime is not None
            if runtime not in self.plane.settings.runtimes:
                raise errors.BadRequestError(
                    f"this server runs {' and '.join(self.plane.settings.runtimes)} sessions, "
                    f"not {runtime}"
                )
            return runtime
        return self.plane.settings.default_runtime

    @staticmethod
    def _runtime_value(runtime: str) -> str:
        """On fork and update, `runtime` may only name the isolation."""
        if runtime not in ISOLATION:
            raise errors.BadRequestError(
                f"runtime must be one of {', '.join(ISOLATION)} here (the image stays)"
            )
        return runtime

    def _image_id(self, image: str | None, runtime: str | None) -> str:
        if runtime in ISOLATION:
            runtime = None
        if runtime is not None and runtime not in LEGACY_RUNTIMES:
            raise errors.BadRequestError(
                f"runtime must be one of {', '.join((*ISOLATION, *LEGACY_RUNTIMES))}"
            )
        if (
            image is None
            or image == self.plane.image_id
            or image in self.plane.settings.image_aliases
        ):
            return self.plane.image_id
        raise errors.BadRequestError(
            f"image {image!r} is not available on this server; use {self.plane.image_id!r} "
            f"or one of {', '.join(self.plane.settings.image_aliases)}"
        )

    def _timeout(self, timeout_ms: int | None) -> int:
        timeout = timeout_ms or self.plane.settings.default_timeout_ms
        if timeout > self.plane.settings.max_timeout_ms:
            raise errors.BadRequestError(
                f"timeout {timeout} ms exceeds this server's maximum of "
                f"{self.plane.settings.max_timeout_ms} ms"
            )
        return timeout

    @staticmethod
    def _resources(request: Any, vcpus: float, memory: int | None) -> tuple[float, int]:
        if request.resources is not None:
            vcpus = request.resources.vcpus or vcpus
            memory = request.resources.memory
        return vcpus, memory or int(MEMORY_MIB_PER_VCPU * vcpus)

    async def _find(self, principal: Principal, name: str) -> SandboxState:
        def find(db: DbSession) -> SandboxState | None:
            row = db.scalar(
                select(models.Sandbox).where(
                    models.Sandbox.project_id == principal.project_id, models.Sandbox.name == name
                )
            )
            if row is None:
                return None
            session = (
                db.get(models.Session, row.current_session_id) if row.current_session_id else None
            )
            return SandboxState(row, session)

        state = await self.plane.db.run(find)
        if state is None:
            raise errors.SandboxNotFoundError(f"no sandbox named {name!r} in this project")
        return state

    def _check_snapshot(
        self, db: DbSession, principal: Principal, snapshot_id: str
    ) -> models.Snapshot:
        snapshot = db.get(models.Snapshot, snapshot_id)
        if (
            snapshot is None
            or snapshot.project_id != principal.project_id
            or snapshot.status != "created"
        ):
            raise errors.SnapshotNotFoundError(
                f"no usable snapshot {snapshot_id!r} in this project"
            )
        return snapshot

    def _check_layer_runtime(self, snapshot_id: str | None, runtime: str) -> None:
        """A snapshot holds one runtime's disk format: refuse to start the other from it."""
        if snapshot_id is None or not self.plane.layers.exists(snapshot_id):
            return
        held = self.plane.layers.get(snapshot_id).format
        if LAYER_FORMAT.get(runtime, held) != held:
            other = next(name for name, fmt in LAYER_FORMAT.items() if fmt == held)
            raise errors.BadRequestError(
                f"snapshot {snapshot_id} holds a {other} filesystem; "
                f"a {runtime} session cannot start from it"
            )

    # -- create and fork --------------------------------------------------------

    async def create(self, principal: Principal, request: CreateSandboxRequest) -> SandboxState:
        image_id = self._image_id(request.image, request.runtime)
        isolation = self._isolation(request.runtime)
        if request.source is not None and (
            request.image or (request.runtime and request.runtime not in ISOLATION)
        ):
            raise errors.BadRequestError("a snapshot source excludes image and runtime")
        vcpus, memory = self._resources(request, self.plane.settings.default_vcpus, None)
        now = self.plane.clock()

        def build(db: DbSession) -> models.Sandbox:
            snapshot_id = None
            image = image_id
            if request.source is not None:
                snapshot = self._check_snapshot(db, principal, request.source.snapshot_id)
                snapshot_id, image = snapshot.id, snapshot.image_id
                self._check_layer_runtime(snapshot.layer_id, isolation)
            row = models.Sandbox(
                id=new_id("sbxn"),
                project_id=principal.project_id,
                name=request.name or new_sandbox_name(),
                persistent=True if request.persistent is None else request.persistent,
                vcpus=vcpus,
                memory=memory,
                timeout_ms=self._timeout(request.timeout),
                image_id=image,
                runtime=isolation,
                region=request.region or self.plane.settings.region,
                env=request.env or {},
                tags=request.tags or {},
                ports=request.ports or [],
                network_policy=request.network_policy or {"mode": "allow-all"},
                snapshot_expiration_ms=request.snapshot_expiration,
                keep_last_snapshots=_keep_last(request),
                current_snapshot_id=snapshot_id,
                **_fresh(now),
            )
            return row

        return await self._add_and_start(build)

    async def fork(
        self, principal: Principal, source_name: str, request: ForkSandboxRequest
    ) -> SandboxState:
        found = await self._find(principal, source_name)
        source = found.sandbox
        vcpus, memory = self._resources(
            request, source.vcpus, source.memory if request.resources is None else None
        )
        runtime = source.runtime
        if request.runtime is not None:
            runtime = self._isolation(self._runtime_value(request.runtime))
        base_snapshot_id = source.current_snapshot_id
        if request.with_memory:
            live = check_forkable(found.session)
            if request.resources is not None or runtime != live.runtime:
                raise errors.BadRequestError(
                    "a fork with memory keeps its source's runtime, vCPUs and memory"
                )
            vcpus, memory = live.vcpus, live.memory  # the session's, as saved with its memory
            base_snapshot_id = live.source_snapshot_id  # its disk stacks on that snapshot
        now = self.plane.clock()
        overrides = request.model_fields_set

        def build(db: DbSession) -> models.Sandbox:
            row = models.Sandbox(
                id=new_id("sbxn"),
                project_id=principal.project_id,
                name=request.name or new_sandbox_name(),
                persistent=source.persistent if request.persistent is None else request.persistent,
                vcpus=vcpus,
                memory=memory,
                timeout_ms=self._timeout(request.timeout or source.timeout_ms),
                image_id=source.image_id,
                runtime=runtime,
                region=request.region or source.region,
                env=request.env if request.env is not None else dict(source.env),
                tags=request.tags if request.tags is not None else dict(source.tags),
                ports=request.ports if request.ports is not None else list(source.ports),
                network_policy=request.network_policy or source.network_policy,
                snapshot_expiration_ms=request.snapshot_expiration
                if "snapshot_expiration" in overrides
                else source.snapshot_expiration_ms,
                keep_last_snapshots=_keep_last(request)
                if "keep_last_snapshots" in overrides
                else source.keep_last_snapshots,
                current_snapshot_id=base_snapshot_id,
                **_fresh(now),
            )
            if row.current_snapshot_id:
                snapshot = self._check_snapshot(db, principal, row.current_snapshot_id)
                self._check_layer_runtime(snapshot.layer_id, runtime)
            return row

        if request.with_memory:
            return await self._add_and_start(build, fork_of=source.id)
        return await self._add_and_start(build)

    async def _add_and_start(
        self,
        build: Callable[[DbSession], models.Sandbox],
        *,
        fork_of: str | None = None,
    ) -> SandboxState:
        """Store a new sandbox (its name must be free in the project); start its first
        session, or with `fork_of` (a sandbox id) fork that sandbox's live session."""

        def insert(db: DbSession) -> models.Sandbox:
            row = build(db)
            db.add(row)
            try:
                db.flush()
            except IntegrityError:
                raise errors.SandboxExistsError(
                    f"a sandbox named {row.name!r} already exists in this project"
                ) from None
            return row

        row = await self.plane.db.run(insert)
        if fork_of is None:
            async with self.plane.lock(row.id):
                session = await self.plane.start_session(row.id)
            return await self._reload(row.id, session)
        async with self.plane.lock(fork_of), self.plane.lock(row.id):
            try:  # checked before, but the source may have stopped meanwhile
                live = check_forkable(await self.plane.db.run(partial(_current, fork_of)))
            except errors.EmberError:
                await self.plane.db.run(partial(_remove_unstarted, row.id))
                raise
            session = await self.plane.start_session(row.id, fork_of=live.id)
        return await self._reload(row.id, session)

    async def _reload(self, sandbox_id: str, session: models.Session | None) -> SandboxState:
        row = await self.plane.db.run(lambda db: db.get(models.Sandbox, sandbox_id))
        if row is None:
            raise errors.SandboxNotFoundError("the sandbox was deleted")
        return SandboxState(row, session)

    # -- get, resume --------------------------------------------------------------

    async def get(self, principal: Principal, name: str, *, resume: bool = False) -> SandboxState:
        state = await self._find(principal, name)
        if not resume or (state.session is not None and state.session.status in ACTIVE):
            return state
        async with self.plane.lock(state.sandbox.id):
            state = await self._find(principal, name)  # it may have resumed meanwhile
            if state.session is not None and state.session.status in ACTIVE:
                return state
            if state.session is not None and state.session.status == PAUSED:
                session = await self.plane.pauses.resume_locked(state.session.id)
            else:
                session = await self.plane.start_session(state.sandbox.id)
        reloaded = await self._reload(state.sandbox.id, session)
        return SandboxState(reloaded.sandbox, session, resumed=True)

    # -- list -------------------------------------------------------------------

    async def query(
        self,
        principal: Principal,
        *,
        limit: int | None,
        cursor: str | None,
        sort_by: str | None,
        sort_order: str | None,
        name_prefix: str | None,
        tags: list[str],
    ) -> SandboxPage:
        size = check_limit(limit)
        sort_by = sort_by or "createdAt"
        if sort_by not in SORT_COLUMNS:
            raise errors.BadRequestError(f"sortBy must be one of {', '.join(SORT_COLUMNS)}")
        order = (sort_order or "desc").lower()
        if order not in ("asc", "desc"):
            raise errors.BadRequestError("sortOrder must be 'asc' or 'desc'")
        tag_filters = parse_tag_filters(tags)
        after = decode_cursor(cursor) if cursor else None
        column = SORT_COLUMNS[sort_by]

        def query(db: DbSession) -> list[SandboxState]:
            stmt = select(models.Sandbox).where(models.Sandbox.project_id == principal.project_id)
            if name_prefix:
                escaped = name_prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                stmt = stmt.where(models.Sandbox.name.like(f"{escaped}%", escape="\\"))
            if after is not None:
                value, last_id = after
                beyond = column > value if order == "asc" else column < value
                tie = models.Sandbox.id > last_id if order == "asc" else models.Sandbox.id < last_id
                stmt = stmt.where(or_(beyond, and_(column == value, tie)))
            for key, value in tag_filters.items():
                stmt = stmt.where(models.Sandbox.tags[key].as_string() == value)
            if order == "asc":
                stmt = stmt.order_by(column.asc(), models.Sandbox.id.asc())
            else:
                stmt = stmt.order_by(column.desc(), models.Sandbox.id.desc())
            found = []
            for row in db.scalars(stmt.limit(size + 1)):
                session = (
                    db.get(models.Session, row.current_session_id)
                    if row.current_session_id
                    else None
                )
                found.append(SandboxState(row, session))
            return found

        found = await self.plane.db.run(query)
        next_cursor = None
        if len(found) > size:
            found = found[:size]
            last = found[-1].sandbox
            next_cursor = encode_cursor(getattr(last, column.key), last.id)
        return SandboxPage(found, next_cursor)

    # -- update, delete -------------------------------------------------------------

    async def update(
        self, principal: Principal, name: str, request: UpdateSandboxRequest
    ) -> SandboxState:
        state = await self._find(principal, name)
        fields = request.model_fields_set
        if "timeout" in fields and request.timeout is not None:
            self._timeout(request.timeout)

        def apply(db: DbSession) -> models.Sandbox:
            row = db.get(models.Sandbox, state.sandbox.id)
            assert row is not None
            if "persistent" in fields and request.persistent is not None:
                row.persistent = request.persistent
            if "runtime" in fields and request.runtime is not None:
                row.runtime = self._isolation(self._runtime_value(request.runtime))
            if "resources" in fields and request.resources is not None:
                row.vcpus, row.memory = self._resources(request, row.vcpus, None)
            if "timeout" in fields and request.timeout is not None:
                row.timeout_ms = request.timeout
            if "network_policy" in fields and request.network_policy is not None:
                row.network_policy = request.network_policy
            if "tags" in fields:
                row.tags = request.tags or {}
            if "ports" in fields:
                row.ports = request.ports or []
            if "env" in fields:
                row.env = request.env or {}
            if "snapshot_expiration" in fields:
                row.snapshot_expiration_ms = request.snapshot_expiration
            if "keep_last_snapshots" in fields:
                row.keep_last_snapshots = _keep_last(request)
            if "region" in fields and request.region:
                row.region = request.region
            if "current_snapshot_id" in fields and request.current_snapshot_id is not None:
                snapshot = self._check_snapshot(db, principal, request.current_snapshot_id)
                row.current_snapshot_id = snapshot.id
            if row.current_snapshot_id and {"runtime", "current_snapshot_id"} & fields:
                current = db.get(models.Snapshot, row.current_snapshot_id)
                if current is not None:
                    self._check_layer_runtime(current.layer_id, row.runtime)
            row.updated_at = self.plane.clock()
            return row

        row = await self.plane.db.run(apply)
        self.plane.forget_sandbox(row.id)
        return SandboxState(row, state.session)

    async def delete(
        self, principal: Principal, name: str, *, delete_snapshots: bool
    ) -> SandboxState:
        state = await self._find(principal, name)
        session = state.session
        if session is not None and session.status in HELD:
            await self.plane.stop_session(session.id, snapshot="none")
        async with self.plane.lock(state.sandbox.id):

            def remove(db: DbSession) -> models.Sandbox:
                row = db.get(models.Sandbox, state.sandbox.id)
                assert row is not None
                at = self.plane.clock()
                for snapshot in db.scalars(
                    select(models.Snapshot).where(models.Snapshot.sandbox_id == row.id)
                ):
                    snapshot.sandbox_id = None
                    if delete_snapshots and snapshot.status == "created":
                        snapshot.status, snapshot.updated_at = "deleted", at
                for child in db.scalars(
                    select(models.Session).where(models.Session.sandbox_id == row.id)
                ):
                    db.delete(child)
                db.flush()
                db.delete(row)
                row.status = "deleted"
                return row

            row = await self.plane.db.run(remove)
        self.plane.forget(state.sandbox.id)
        await self.plane.snapshots.collect_garbage()
        return SandboxState(row, None)


def _fresh(now: int) -> dict[str, Any]:
    """The fields every new sandbox starts with."""
    return {
        "current_session_id": None,
        "status": "pending",
        "status_updated_at": now,
        "created_at": now,
        "updated_at": now,
    }


def _keep_last(request: Any) -> dict[str, Any] | None:
    keep = request.keep_last_snapshots
    if keep is None:
        return None
    return {
        "count": keep.count,
        "expiration": keep.expiration,
        "deleteEvicted": keep.delete_evicted,
    }


def _current(sandbox_id: str, db: DbSession) -> models.Session | None:
    box = db.get(models.Sandbox, sandbox_id)
    if box is None or box.current_session_id is None:
        return None
    return db.get(models.Session, box.current_session_id)


def _remove_unstarted(sandbox_id: str, db: DbSession) -> None:
    box = db.get(models.Sandbox, sandbox_id)
    if box is not None:
        db.delete(box)
