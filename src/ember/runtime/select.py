"""Both runtimes behind one Runtime: sessions go to the one their spec names.

The control plane holds one `Runtimes`; a session's calls go to the runtime
that holds it (a microVM session has a directory under `vms/`). Both share
one network manager: a microVM gets a tap bridged into its own session
namespace, and the same firewall, DNS server and egress proxy.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .agent_client import AgentClient
from .base import (
    FrozenLayer,
    ResourceUsage,
    SessionInfo,
    SessionSpec,
    SessionStartError,
    UnsupportedError,
)
from .container import ContainerRuntime
from .microvm import MicroVmRuntime

CONTAINER, MICROVM = "container", "microvm"
ISOLATION = (CONTAINER, MICROVM)


class Runtimes:
    name = "runtimes"

    def __init__(self, container: ContainerRuntime, microvm: MicroVmRuntime | None) -> None:
        self.container = container
        self.microvm = microvm

    def _holder(self, session_id: str) -> ContainerRuntime | MicroVmRuntime:
        if self.microvm is not None and self.microvm.holds(session_id):
            return self.microvm
        return self.container

    async def start(self, spec: SessionSpec) -> SessionInfo:
        if spec.runtime == MICROVM:
            if self.microvm is None:
                raise SessionStartError("this server runs no microVMs")
            return await self.microvm.start(spec)
        return await self.container.start(spec)

    def agent(self, session_id: str) -> AgentClient:
        return self._holder(session_id).agent(session_id)

    async def stop(self, session_id: str) -> None:
        await self._holder(session_id).stop(session_id)

    async def freeze(self, session_id: str, layer_id: str) -> FrozenLayer:
        return await self._holder(session_id).freeze(session_id, layer_id)

    async def discard(self, session_id: str) -> None:
        await self._holder(session_id).discard(session_id)

    async def info(self, session_id: str) -> SessionInfo:
        return await self._holder(session_id).info(session_id)

    async def alive(self, session_id: str) -> bool:
        return await self._holder(session_id).alive(session_id)

    async def usage(self, session_id: str) -> ResourceUsage:
        return await self._holder(session_id).usage(session_id)

    async def sessions(self) -> list[str]:
        found = await self.container.sessions()
        if self.microvm is not None:
            found += await self.microvm.sessions()
        return sorted(found)

    def close(self) -> None:
        self.container.close()
        if self.microvm is not None:
            self.microvm.close()

    def address(self, session_id: str) -> str | None:
        return self._holder(session_id).address(session_id)

    async def set_network_policy(self, session_id: str, policy: Mapping[str, Any]) -> None:
        await self._holder(session_id).set_network_policy(session_id, policy)

    async def restore_networks(self, policies: Mapping[str, Mapping[str, Any]]) -> None:
        await self.container.restore_networks(policies)

    def _microvm_of(self, session_id: str) -> MicroVmRuntime:
        if self.microvm is None or not self.microvm.holds(session_id):
            raise UnsupportedError(
                "pausing and forking with memory need the microvm runtime; "
                "this session runs in a container"
            )
        return self.microvm

    async def pause(self, session_id: str) -> None:
        await self._microvm_of(session_id).pause(session_id)

    async def resume(
        self, session_id: str, network_policy: Mapping[str, Any] | None = None
    ) -> SessionInfo:
        return await self._microvm_of(session_id).resume(session_id, network_policy)

    async def fork(self, session_id: str, spec: SessionSpec) -> SessionInfo:
        return await self._microvm_of(session_id).fork(session_id, spec)
