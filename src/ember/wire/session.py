"""Session shapes (reference §9.2)."""

from __future__ import annotations

from pydantic import Field

from .base import RequestModel, ResponseModel
from .common import Pagination, PositiveMs, Route
from .network import NetworkPolicy
from .snapshot import Snapshot


class NetworkTransfer(ResponseModel):
    ingress: int = 0
    egress: int = 0


class Session(ResponseModel):
    id: str
    memory: int
    vcpus: float
    region: str
    runtime: str | None = None
    timeout: int
    status: str  # pending | running | stopping | stopped | failed | aborted | snapshotting
    paused: bool | None = None  # Ember extension: stopped with its memory saved, to resume
    requested_at: int
    started_at: int | None = None
    requested_stop_at: int | None = None
    stopped_at: int | None = None
    aborted_at: int | None = None
    duration: int | None = None
    source_snapshot_id: str | None = None
    snapshotted_at: int | None = None
    created_at: int
    cwd: str
    updated_at: int
    interactive_port: int | None = None
    network_policy: NetworkPolicy | None = None
    active_cpu_duration_ms: int | None = None
    network_transfer: NetworkTransfer | None = None
    expires_at: int | None = None
    sandbox_name: str | None = None  # Ember extension
    memory_peak_bytes: int | None = None  # Ember extension


class SessionResponse(ResponseModel):
    session: Session
    routes: list[Route] = Field(default_factory=list)


class SessionList(ResponseModel):
    sessions: list[Session]
    pagination: Pagination


class ExtendTimeoutRequest(RequestModel):
    duration: PositiveMs


class StopResponse(ResponseModel):
    session: Session
    sandbox: object | None = None
    snapshot: Snapshot | None = None


class SessionSnapshotResponse(ResponseModel):
    snapshot: Snapshot
    session: Session
