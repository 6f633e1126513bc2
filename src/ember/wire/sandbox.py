"""Sandbox shapes and the create / update / fork requests (reference §4, §9)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, field_validator

from .base import RequestModel, ResponseModel
from .common import Env, Name, Pagination, Ports, PositiveMs, Route, SnapshotExpiration, Tags
from .network import NetworkPolicy, parse_network_policy
from .session import Session

VCPUS = (0.5, 1, 2, 4, 8)


class Resources(RequestModel):
    vcpus: float | None = None
    memory: Annotated[int, Field(ge=128, le=262144)] | None = None

    @field_validator("vcpus")
    @classmethod
    def _vcpus(cls, value: float | None) -> float | None:
        if value is not None and value not in VCPUS:
            raise ValueError(f"vcpus must be one of {', '.join(str(v) for v in VCPUS)}")
        return value


class KeepLastSnapshots(RequestModel):
    count: Annotated[int, Field(ge=1, le=10)]
    expiration: SnapshotExpiration = None
    delete_evicted: bool = True


class SnapshotSource(RequestModel):
    type: Literal["snapshot"]
    snapshot_id: Annotated[str, Field(min_length=1, max_length=128)]


class _SandboxOptions(RequestModel):
    ports: Ports | None = None
    timeout: PositiveMs | None = None
    resources: Resources | None = None
    persistent: bool | None = None
    network_policy: dict[str, Any] | None = None
    env: Env | None = None
    tags: Tags | None = None
    snapshot_expiration: SnapshotExpiration = None
    keep_last_snapshots: KeepLastSnapshots | None = None
    region: str | None = None
    failover_regions: list[str] | None = None
    mounts: dict[str, Any] | None = None  # drives; the Python SDK always sends {} on fork

    @field_validator("network_policy", mode="before")
    @classmethod
    def _policy(cls, value: Any) -> Any:
        return None if value is None else parse_network_policy(value)

    @field_validator("mounts")
    @classmethod
    def _no_drives(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value:
            raise ValueError("Ember has no drives: mounts must be empty")
        return value


class CreateSandboxRequest(_SandboxOptions):
    project_id: str | None = None
    name: Name | None = None
    source: SnapshotSource | None = None
    image: str | None = None
    runtime: str | None = None


class ForkSandboxRequest(_SandboxOptions):
    project_id: str | None = None
    name: Name | None = None
    runtime: str | None = None  # Ember: "container" | "microvm"
    # Ember: start from a copy of the source session's memory and disk (a running
    # or paused microVM), processes and all, instead of its current snapshot.
    with_memory: bool = False


class UpdateSandboxRequest(_SandboxOptions):
    current_snapshot_id: str | None = None
    runtime: str | None = None  # Ember: "container" | "microvm", for the next session


class Sandbox(ResponseModel):
    _nullable = frozenset({"currentSessionId"})
    name: str
    persistent: bool
    region: str | None = None
    failover_regions: list[str] | None = None
    vcpus: float | None = None
    memory: int | None = None
    runtime: str | None = None
    image: str | None = None
    timeout: int | None = None
    network_policy: NetworkPolicy | None = None
    total_egress_bytes: int | None = None
    total_ingress_bytes: int | None = None
    total_active_cpu_duration_ms: int | None = None
    total_duration_ms: int | None = None
    created_at: int
    updated_at: int
    expires_at: int | None = None
    current_session_id: str | None
    current_snapshot_id: str | None = None
    status: str
    paused: bool | None = None  # Ember extension: its session is paused
    status_updated_at: int | None = None
    cwd: str | None = None
    tags: dict[str, str] | None = None
    env: dict[str, str] | None = None
    ports: list[int] | None = None
    snapshot_expiration: int | None = None
    keep_last_snapshots: dict[str, Any] | None = None
    project_id: str | None = None


class SandboxResponse(ResponseModel):
    sandbox: Sandbox
    session: Session | None = None
    routes: list[Route] = Field(default_factory=list)
    resumed: bool | None = None


class SandboxList(ResponseModel):
    sandboxes: list[Sandbox]
    pagination: Pagination


class PauseResponse(ResponseModel):
    """Ember's pause and resume: the session and its sandbox, afterwards."""

    session: Session
    sandbox: Sandbox
