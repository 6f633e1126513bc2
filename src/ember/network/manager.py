"""Networks for sessions, as the runtime uses them: attach, change policy, detach."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from .firewall import Firewall, NetworkPolicy
from .links import (
    SessionNetwork,
    create_session_network,
    destroy_session_network,
    host_interface,
    netns_name,
)
from .pool import DEFAULT_RANGE, AddressPool

log = logging.getLogger("ember.network")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")


def enable_forwarding() -> None:
    if IP_FORWARD.read_text().strip() != "1":
        IP_FORWARD.write_text("1")
        log.info("enabled net.ipv4.ip_forward: sessions' traffic is routed through this host")


class NetworkManager:
    def __init__(self, data_dir: Path, session_range: str = DEFAULT_RANGE) -> None:
        self.pool = AddressPool(data_dir / "network" / "leases", session_range)
        self.firewall = Firewall(session_range)
        enable_forwarding()
        self.firewall.install()

    def attach(self, session_id: str, policy: Mapping[str, Any] | None, pid: int) -> SessionNetwork:
        """Give the process `pid` (a session's init) its network and policy."""
        network = create_session_network(self.pool.lease(session_id), pid)
        try:
            self.firewall.apply(network.host_if, NetworkPolicy.from_stored(dict(policy or {})))
        except BaseException:
            self.detach(session_id)
            raise
        return network

    def apply(self, session_id: str, policy: Mapping[str, Any] | None) -> None:
        self.firewall.apply(
            host_interface(session_id), NetworkPolicy.from_stored(dict(policy or {}))
        )

    def restore(self, policies: Mapping[str, Mapping[str, Any]]) -> None:
        """After a restart (which rebuilt the table): put the adopted sessions'
        chains back and remove the networks of sessions that are gone."""
        for lease in self.pool.leases():
            policy = policies.get(lease.session_id)
            if policy is None:
                log.info("removing the network left by session %s", lease.session_id)
                self.detach(lease.session_id)
            else:
                self.apply(lease.session_id, policy)

    def address(self, session_id: str) -> str | None:
        lease = self.pool.find(session_id)
        return str(lease.sandbox_ip) if lease is not None else None

    def transfer(self, session_id: str) -> tuple[int, int]:
        """(ingress, egress) bytes of the session so far, from its veth's counters.

        The host end receives what the session sends, so its rx is the
        session's egress and its tx the session's ingress.
        """
        with IPRoute() as ipr:
            links = ipr.get_links(ifname=host_interface(session_id))
        if not links:
            return 0, 0
        stats = links[0].get_attr("IFLA_STATS64") or {}
        return int(stats.get("tx_bytes", 0)), int(stats.get("rx_bytes", 0))

    def detach(self, session_id: str) -> None:
        """Remove the session's network; idempotent, and fine for a session that never had one."""
        lease = self.pool.find(session_id)
        self.firewall.remove(host_interface(session_id))
        if lease is not None:
            destroy_session_network(
                SessionNetwork(
                    session_id, lease, netns_name(session_id), host_interface(session_id)
                )
            )
            self.pool.release(session_id)
