"""An in-tree fake of the Runtime seam, for control-plane tests without root.

Only the seam is fake: the store, the control plane and the API are real.
`stop_gate` and `freeze_gate` hold a stop in its `stopping` and
`snapshotting` states until the test releases them. Sessions whose spec
names the microvm runtime can pause, resume and fork, as microVMs can.
"""

from __future__ import annotations

import asyncio
import time

from ember.runtime import (
    AgentClient,
    FrozenLayer,
    ResourceUsage,
    SessionInfo,
    SessionNotFoundError,
    SessionSpec,
    SessionStatus,
    UnsupportedError,
)


class FakeRuntime:
    name = "fake"

    def __init__(self) -> None:
        self.running: dict[str, SessionInfo] = {}
        self.stopped: dict[str, SessionInfo] = {}
        self.frozen: dict[str, str] = {}  # layer id -> session id
        self.paused: dict[str, SessionInfo] = {}
        self.forked: dict[str, str] = {}  # fork's session id -> source's
        self.stop_gate = asyncio.Event()
        self.freeze_gate = asyncio.Event()
        self.stop_gate.set()
        self.freeze_gate.set()

    async def start(self, spec: SessionSpec) -> SessionInfo:
        info = SessionInfo(
            spec.session_id,
            self.name,
            SessionStatus.RUNNING,
            int(time.time() * 1000),
            "vercel-sandbox",
            "/vercel/sandbox",
            spec,
        )
        self.running[spec.session_id] = info
        return info

    def agent(self, session_id: str) -> AgentClient:
        return AgentClient(f"/nonexistent/{session_id}.sock")

    async def stop(self, session_id: str) -> None:
        await self.stop_gate.wait()
        info = self.running.pop(session_id, None) or self.paused.pop(session_id, None)
        if info is not None:
            self.stopped[session_id] = info

    async def freeze(self, session_id: str, layer_id: str) -> FrozenLayer:
        await self.freeze_gate.wait()
        info = self.stopped.pop(session_id)
        self.frozen[layer_id] = session_id
        return FrozenLayer(layer_id, info.spec.top_layer, 4096)

    async def discard(self, session_id: str) -> None:
        self.running.pop(session_id, None)
        self.stopped.pop(session_id, None)
        self.paused.pop(session_id, None)

    def _microvm(self, info: SessionInfo) -> None:
        if info.spec.runtime != "microvm":
            raise UnsupportedError("pausing a session needs the microvm runtime")

    async def pause(self, session_id: str) -> None:
        info = self.running[session_id]
        self._microvm(info)
        self.paused[session_id] = self.running.pop(session_id)

    async def resume(self, session_id: str, network_policy: object = None) -> SessionInfo:
        info = self.paused.pop(session_id)
        self.running[session_id] = info
        return info

    async def fork(self, session_id: str, spec: SessionSpec) -> SessionInfo:
        assert session_id in self.paused, "forks are taken of paused sessions"
        self.forked[spec.session_id] = session_id
        return await self.start(spec)

    async def info(self, session_id: str) -> SessionInfo:
        if session_id in self.running:
            return self.running[session_id]
        if session_id in self.paused:
            info = self.paused[session_id]
            return SessionInfo(
                info.session_id, info.runtime, SessionStatus.PAUSED, info.started_at_ms,
                info.user, info.cwd, info.spec,
            )  # fmt: skip
        if session_id in self.stopped:
            return self.stopped[session_id]
        raise SessionNotFoundError(session_id)

    async def alive(self, session_id: str) -> bool:
        return session_id in self.running

    async def usage(self, session_id: str) -> ResourceUsage:
        return ResourceUsage(
            cpu_ms=5, memory_bytes=1 << 20, memory_peak_bytes=2 << 20, pids=1, disk_used_bytes=0
        )

    def close(self) -> None:
        pass

    def address(self, session_id: str) -> str | None:
        return None

    async def set_network_policy(self, session_id: str, policy: object) -> None:
        raise SessionNotFoundError("the fake runtime has no networking")

    async def restore_networks(self, policies: object) -> None:
        pass  # no networks to restore

    async def sessions(self) -> list[str]:
        return sorted({*self.running, *self.stopped, *self.paused})
