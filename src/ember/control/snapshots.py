"""Snapshots: list, get, delete, tree; expiry, keep-last-N retention, layer GC.

A snapshot's filesystem is the layer of the same id (see ember.snapshots).
Deleting a snapshot marks it deleted; its layer goes when nothing needs it:
no live snapshot and no active session stacks on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ember.snapshots import LayerError
from ember.store import models
from ember.wire import errors

from .auth import Principal
from .pagination import check_limit, check_order, decode_cursor, encode_cursor, keyset_by_created
from .states import HELD

if TYPE_CHECKING:
    from .plane import ControlPlane

log = logging.getLogger("ember.control")


@dataclass(frozen=True)
class SnapshotPage:
    items: list[models.Snapshot]
    next_cursor: str | None


@dataclass(frozen=True)
class TreeNode:
    snapshot: models.Snapshot
    siblings: list[models.Snapshot]
    count: int


class Snapshots:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def get(self, principal: Principal, snapshot_id: str) -> models.Snapshot:
        row = await self.plane.db.run(lambda db: db.get(models.Snapshot, snapshot_id))
        if row is None or row.project_id != principal.project_id:
            raise errors.SnapshotNotFoundError(f"no snapshot {snapshot_id!r} in this project")
        return row

    async def query(
        self,
        principal: Principal,
        *,
        sandbox_name: str | None,
        limit: int | None,
        cursor: str | None,
        sort_order: str | None,
    ) -> SnapshotPage:
        size = check_limit(limit)
        order = check_order(sort_order)
        after = decode_cursor(cursor) if cursor else None

        def query(db: DbSession) -> list[models.Snapshot]:
            stmt = select(models.Snapshot).where(models.Snapshot.project_id == principal.project_id)
            if sandbox_name:
                stmt = stmt.where(models.Snapshot.sandbox_name == sandbox_name)
            stmt = keyset_by_created(stmt, models.Snapshot, after, order)
            return list(db.scalars(stmt.limit(size + 1)))

        rows = await self.plane.db.run(query)
        next_cursor = None
        if len(rows) > size:
            rows = rows[:size]
            next_cursor = encode_cursor(rows[-1].created_at, rows[-1].id)
        return SnapshotPage(rows, next_cursor)

    async def delete(self, principal: Principal, snapshot_id: str) -> models.Snapshot:
        await self.get(principal, snapshot_id)

        def mark(db: DbSession) -> models.Snapshot:
            row = db.get(models.Snapshot, snapshot_id)
            assert row is not None
            if row.status == "created":
                row.status, row.updated_at = "deleted", self.plane.clock()
            return row

        row = await self.plane.db.run(mark)
        await self.collect_garbage()
        return row

    async def tree(
        self, principal: Principal, snapshot_id: str, *, limit: int | None, sort_order: str | None
    ) -> tuple[list[TreeNode], models.Snapshot]:
        """The anchor's ancestors and the anchor, each with its siblings, root first."""
        anchor = await self.get(principal, snapshot_id)
        size = check_limit(limit)

        def walk(db: DbSession) -> list[TreeNode]:
            chain = [anchor]
            while chain[-1].parent_id and len(chain) < 1000:
                parent = db.get(models.Snapshot, chain[-1].parent_id)
                if parent is None:
                    break
                chain.append(parent)
            nodes = []
            for node in reversed(chain):
                siblings = list(
                    db.scalars(
                        select(models.Snapshot)
                        .where(
                            models.Snapshot.project_id == principal.project_id,
                            models.Snapshot.parent_id == node.parent_id
                            if node.parent_id
                            else models.Snapshot.parent_id.is_(None),
                            models.Snapshot.sandbox_id == node.sandbox_id,
                            models.Snapshot.id != node.id,
                        )
                        .order_by(models.Snapshot.created_at)
                        .limit(size)
                    )
                )
                nodes.append(TreeNode(node, siblings, len(siblings) + 1))
            return nodes

        nodes = await self.plane.db.run(walk)
        if check_order(sort_order) == "desc":
            nodes.reverse()
        return nodes, anchor

    # -- upkeep -------------------------------------------------------------------

    async def apply_retention(self, sandbox_id: str) -> None:
        """Keep the newest `keepLastSnapshots.count` snapshots of a sandbox."""

        def evict(db: DbSession) -> int:
            box = db.get(models.Sandbox, sandbox_id)
            keep = (box.keep_last_snapshots if box else None) or {}
            if box is None or not keep.get("count"):
                return 0
            rows = list(
                db.scalars(
                    select(models.Snapshot)
                    .where(
                        models.Snapshot.sandbox_id == sandbox_id,
                        models.Snapshot.status == "created",
                    )
                    .order_by(models.Snapshot.created_at.desc(), models.Snapshot.id.desc())
                )
            )
            evicted = 0
            for row in rows[int(keep["count"]) :]:
                if keep.get("deleteEvicted", True) and row.id != box.current_snapshot_id:
                    row.status, row.updated_at = "deleted", self.plane.clock()
                    evicted += 1
            return evicted

        if await self.plane.db.run(evict):
            await self.collect_garbage()

    async def expire_due(self) -> None:
        def expire(db: DbSession) -> int:
            now = self.plane.clock()
            rows = db.scalars(
                select(models.Snapshot).where(
                    models.Snapshot.status == "created",
                    models.Snapshot.expires_at.is_not(None),
                    models.Snapshot.expires_at <= now,
                )
            )
            count = 0
            for row in rows:
                row.status, row.updated_at = "deleted", now
                count += 1
            return count

        if await self.plane.db.run(expire):
            await self.collect_garbage()

    async def collect_garbage(self) -> None:
        """Delete layers no live snapshot and no active session needs."""

        def referenced(db: DbSession) -> tuple[set[str], set[str]]:
            live = set(
                db.scalars(
                    select(models.Snapshot.layer_id).where(models.Snapshot.status == "created")
                )
            )
            in_use = set(
                db.scalars(
                    select(models.Snapshot.layer_id)
                    .join(models.Session, models.Session.source_snapshot_id == models.Snapshot.id)
                    .where(models.Session.status.in_(HELD))
                )
            )
            dead = set(
                db.scalars(
                    select(models.Snapshot.layer_id).where(models.Snapshot.status != "created")
                )
            )
            return live | in_use, dead

        keep_tops, dead = await self.plane.db.run(referenced)
        keep: set[str] = set()
        for layer_id in keep_tops:
            try:
                keep.update(layer.layer_id for layer in self.plane.layers.chain(layer_id))
            except LayerError:
                log.warning("layer %s of a live snapshot is missing", layer_id)
        for layer_id in dead - keep:
            if self.plane.layers.exists(layer_id):
                log.info("deleting layer %s", layer_id)
                self.plane.layers.delete(layer_id)
