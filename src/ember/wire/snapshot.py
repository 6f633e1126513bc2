"""Snapshot shapes (reference §6, §9.2)."""

from __future__ import annotations

from pydantic import Field

from .base import RequestModel, ResponseModel
from .common import Pagination, SnapshotExpiration


class Snapshot(ResponseModel):
    id: str
    source_session_id: str
    region: str
    regions: list[str] = Field(default_factory=list)
    status: str  # created | deleted | failed
    size_bytes: int
    expires_at: int | None = None
    created_at: int
    updated_at: int
    last_used_at: int | None = None
    creation_method: str | None = None  # "stop" (automatic) | "snapshot" (explicit)
    parent_id: str | None = None
    sandbox_name: str | None = None  # Ember extension


class SnapshotResponse(ResponseModel):
    snapshot: Snapshot


class SnapshotList(ResponseModel):
    snapshots: list[Snapshot]
    pagination: Pagination


class SnapshotTreeNode(ResponseModel):
    snapshot: Snapshot
    siblings: list[Snapshot] = Field(default_factory=list)
    count: str = "0"  # a decimal string, as the official JS client's schema requires


class SnapshotTree(ResponseModel):
    snapshots: list[SnapshotTreeNode]
    anchor: SnapshotTreeNode | None = None  # the anchor's own node
    pagination: Pagination


class SnapshotRequest(RequestModel):
    expiration: SnapshotExpiration = None
