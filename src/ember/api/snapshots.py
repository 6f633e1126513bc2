"""Routes of snapshots: list, tree, get, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ember.control.views import snapshot_view
from ember.wire.common import Pagination
from ember.wire.snapshot import SnapshotList, SnapshotResponse, SnapshotTree, SnapshotTreeNode

from .deps import Caller, Plane

router = APIRouter()


@router.get("/v2/sandboxes/snapshots", response_model=SnapshotList)
async def list_snapshots(
    control: Plane,
    caller: Caller,
    name: str | None = None,
    limit: int | None = None,
    cursor: str | None = None,
    sort_order: Annotated[str | None, Query(alias="sortOrder")] = None,
) -> SnapshotList:
    page = await control.snapshots.query(
        caller, sandbox_name=name, limit=limit, cursor=cursor, sort_order=sort_order
    )
    return SnapshotList(
        snapshots=[snapshot_view(row) for row in page.items],
        pagination=Pagination(count=len(page.items), next=page.next_cursor),
    )


@router.get("/v2/sandboxes/snapshots/tree", response_model=SnapshotTree)
async def snapshot_tree(
    control: Plane,
    caller: Caller,
    snapshot_id: Annotated[str, Query(alias="snapshotId")],
    limit: int | None = None,
    sort_order: Annotated[str | None, Query(alias="sortOrder")] = None,
) -> SnapshotTree:
    nodes, anchor = await control.snapshots.tree(
        caller, snapshot_id, limit=limit, sort_order=sort_order
    )
    wire_nodes = [
        SnapshotTreeNode(
            snapshot=snapshot_view(node.snapshot),
            siblings=[snapshot_view(s) for s in node.siblings],
            count=str(node.count),
        )
        for node in nodes
    ]
    return SnapshotTree(
        snapshots=wire_nodes,
        anchor=next((n for n in wire_nodes if n.snapshot.id == anchor.id), None),
        pagination=Pagination(count=len(nodes), next=None),
    )


@router.get("/v2/sandboxes/snapshots/{snapshot_id}", response_model=SnapshotResponse)
async def get_snapshot(snapshot_id: str, control: Plane, caller: Caller) -> SnapshotResponse:
    return SnapshotResponse(
        snapshot=snapshot_view(await control.snapshots.get(caller, snapshot_id))
    )


@router.delete("/v2/sandboxes/snapshots/{snapshot_id}", response_model=SnapshotResponse)
async def delete_snapshot(snapshot_id: str, control: Plane, caller: Caller) -> SnapshotResponse:
    return SnapshotResponse(
        snapshot=snapshot_view(await control.snapshots.delete(caller, snapshot_id))
    )
