"""The Runtime protocol: what every isolation technology offers the control plane.

A runtime turns a `SessionSpec` into a running session whose agent is
reachable, and back. Runtimes know nothing about HTTP or the store. The
filesystem of a session is a stack: the base image, then snapshot layers
(bottom to top), then one writable layer owned by the session. Stopping keeps
the writable layer; `freeze` publishes it as a new read-only layer whose
parent is the session's top layer; `discard` throws it away.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from .agent_client import AgentClient

MEMORY_MIB_PER_VCPU = 2048


class EmberRuntimeError(Exception):
    """Base of runtime failures; `control` translates these at its boundary."""


class SessionStartError(EmberRuntimeError):
    """A session could not be started; nothing of it is left behind."""


class SessionNotFoundError(EmberRuntimeError):
    """The runtime has no session with that id."""


class UnsupportedError(EmberRuntimeError):
    """This runtime cannot do that (pausing a container, for one)."""


@dataclass(frozen=True)
class Resources:
    vcpus: float = 1
    memory_mib: int | None = None  # default: MEMORY_MIB_PER_VCPU per vCPU
    disk_mib: int = 10 * 1024  # size limit of the session's writable layer
    pids_max: int = 2048

    @property
    def memory_limit_mib(self) -> int:
        return self.memory_mib or int(MEMORY_MIB_PER_VCPU * self.vcpus)


@dataclass(frozen=True)
class SessionSpec:
    session_id: str
    image_id: str
    top_layer: str | None = None  # newest snapshot layer; its ancestors stack below
    resources: Resources = field(default_factory=Resources)
    env: Mapping[str, str] = field(default_factory=dict)
    hostname: str = "sandbox"
    netns_path: str | None = None  # join this network namespace instead of a new one
    network_policy: Mapping[str, Any] | None = None  # stored policy shape; None: no network
    runtime: str = "container"  # which runtime runs it: "container" | "microvm"


class SessionStatus(enum.StrEnum):
    RUNNING = "running"
    STOPPED = "stopped"  # no processes; the writable layer is still there
    PAUSED = "paused"  # no processes; memory saved to resume from (microVMs)


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    runtime: str
    status: SessionStatus
    started_at_ms: int
    user: str
    cwd: str
    spec: SessionSpec


@dataclass(frozen=True)
class ResourceUsage:
    cpu_ms: int
    memory_bytes: int
    memory_peak_bytes: int
    pids: int
    disk_used_bytes: int
    ingress_bytes: int = 0  # into the session over its network
    egress_bytes: int = 0  # out of it


@dataclass(frozen=True)
class FrozenLayer:
    layer_id: str
    parent: str | None
    size_bytes: int


def info_to_json(info: SessionInfo) -> dict[str, Any]:
    """A session's record as runtimes keep it on disk (session.json)."""
    data = asdict(info)
    data["spec"]["env"] = dict(info.spec.env)
    return data


def info_from_json(data: dict[str, Any]) -> SessionInfo:
    spec_data = dict(data["spec"])
    spec_data["resources"] = Resources(**spec_data["resources"])
    spec = SessionSpec(**spec_data)
    return SessionInfo(
        data["session_id"],
        data["runtime"],
        SessionStatus(data["status"]),
        data["started_at_ms"],
        data["user"],
        data["cwd"],
        spec,
    )


class Runtime(Protocol):
    name: str

    async def start(self, spec: SessionSpec) -> SessionInfo:
        """Start a session and return once its agent answers."""
        ...

    def agent(self, session_id: str) -> AgentClient:
        """The client of a running session's agent."""
        ...

    async def stop(self, session_id: str) -> None:
        """End every process of the session; keep its writable layer. Idempotent."""
        ...

    async def freeze(self, session_id: str, layer_id: str) -> FrozenLayer:
        """Publish a stopped session's writable layer as read-only layer `layer_id`."""
        ...

    async def discard(self, session_id: str) -> None:
        """Delete a stopped session's writable layer and everything else it left."""
        ...

    async def info(self, session_id: str) -> SessionInfo: ...

    async def alive(self, session_id: str) -> bool:
        """Cheaply: does the session still run? (The control plane polls it, to stop
        sessions that ended on their own: a guest's poweroff, a kernel panic.)"""
        ...

    async def usage(self, session_id: str) -> ResourceUsage: ...

    async def sessions(self) -> list[str]:
        """Ids of every session this runtime holds, running or stopped (for recovery)."""
        ...

    def close(self) -> None:
        """Release resources kept for future sessions; running sessions stay."""
        ...

    def address(self, session_id: str) -> str | None:
        """The session's IP address, reachable from the host; None without networking."""
        ...

    async def set_network_policy(self, session_id: str, policy: Mapping[str, Any]) -> None:
        """Change a running session's network policy; takes effect on the next connection."""
        ...

    async def restore_networks(self, policies: Mapping[str, Mapping[str, Any]]) -> None:
        """After a restart: re-apply the policies of the adopted sessions (by id) and
        remove every other network a crashed predecessor left behind."""
        ...

    async def pause(self, session_id: str) -> None:
        """Save a running session's memory and end its processes; `resume` brings
        them back. UnsupportedError where the runtime cannot."""
        ...

    async def resume(
        self, session_id: str, network_policy: Mapping[str, Any] | None = None
    ) -> SessionInfo:
        """Run a paused session again, as it was when it paused."""
        ...

    async def fork(self, session_id: str, spec: SessionSpec) -> SessionInfo:
        """A new running session (`spec`) with a copy of a paused session's disk and memory."""
        ...
