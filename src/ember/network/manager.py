"""Networks for sessions, as the runtime uses them: attach, change policy, detach."""

from __future__ import annotations

import fcntl
import logging
import os
import ssl
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyroute2 import IPRoute

from .ca import EgressCA
from .dns_server import DnsServer
from .firewall import EgressPorts, Firewall, host_addresses
from .links import (
    SessionNetwork,
    create_session_network,
    destroy_session_network,
    host_interface,
    netns_name,
)
from .policy import NetworkPolicy
from .pool import DEFAULT_RANGE, AddressPool, Lease, NetworkError
from .proxy import EgressProxy
from .resolver import UpstreamResolver
from .trust import trust_layer

log = logging.getLogger("ember.network")
IP_FORWARD = Path("/proc/sys/net/ipv4/ip_forward")
# One emberd manages sessions' networking per host: the nftables table is
# the host's, so a second one would rebuild it under the first one's sessions.
HOST_LOCK = Path("/run/ember/network.lock")


def claim_host() -> int:
    """Take the host's networking lock (held until the process ends or `release_host`)."""
    HOST_LOCK.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    fd = os.open(HOST_LOCK, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise NetworkError(
            "another emberd manages sandbox networking on this host; "
            "stop it, or start this one with --no-network"
        ) from None
    return fd


def release_host(fd: int) -> None:
    os.close(fd)  # closing the only descriptor drops the lock


def uninstall_if_unclaimed(session_range: str = DEFAULT_RANGE) -> bool:
    """Remove Ember's nftables table unless a running emberd manages it."""
    try:
        fd = claim_host()
    except NetworkError:
        return False
    try:
        Firewall(session_range).uninstall()
    finally:
        release_host(fd)
    return True


def enable_forwarding() -> None:
    if IP_FORWARD.read_text().strip() != "1":
        IP_FORWARD.write_text("1")
        log.info("enabled net.ipv4.ip_forward: sessions' traffic is routed through this host")


@dataclass(frozen=True)
class EgressSettings:
    """Where sessions' names are resolved (none: the host's resolv.conf) and which
    extra CAs the proxy trusts when it re-encrypts intercepted requests."""

    nameservers: Sequence[str] = ()
    upstream_ca: Path | None = None


class _Egress:
    """emberd's DNS server and egress proxy, with the policies they enforce by address."""

    def __init__(self, data_dir: Path, settings: EgressSettings, host: Collection[str]) -> None:
        self.policies: dict[str, NetworkPolicy] = {}
        self.host = frozenset(host)
        self.resolver = UpstreamResolver(settings.nameservers)
        self.ca = EgressCA(data_dir / "network" / "ca")
        upstream = ssl.create_default_context()
        if settings.upstream_ca is not None:
            upstream.load_verify_locations(cafile=str(settings.upstream_ca))
        upstream.set_alpn_protocols(["http/1.1"])
        self.dns = DnsServer(self.policies.get, self.resolver)
        self.proxy = EgressProxy(
            self.policies.get, self.resolver, self.ca, lambda: self.host, upstream
        )
        self.dns.start()
        self.proxy.start()

    @property
    def ports(self) -> EgressPorts:
        return EgressPorts(self.dns.port, self.proxy.port)

    def close(self) -> None:
        self.proxy.close()
        self.dns.close()


class NetworkManager:
    def __init__(
        self,
        data_dir: Path,
        session_range: str = DEFAULT_RANGE,
        egress: EgressSettings | None = None,
        *,
        manage_host: bool = True,
    ) -> None:
        """With `egress`, sessions get DNS, domain rules and header injection.
        With `manage_host`, this takes the host's networking (lock, forwarding,
        the nftables table); without, it can only take sessions' networks
        down (cleaning up after a server)."""
        self.data_dir = data_dir
        self._host_lock = claim_host() if manage_host else None
        try:
            self.pool = AddressPool(data_dir / "network" / "leases", session_range)
            host = host_addresses()
            self.egress = _Egress(data_dir, egress, host) if egress is not None else None
            self.firewall = Firewall(
                session_range, self.egress.ports if self.egress is not None else None
            )
            if manage_host:
                enable_forwarding()
                self.firewall.install()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Stop the DNS server and the proxy and let the host go; sessions keep
        their links and chains (the next emberd adopts them)."""
        egress = getattr(self, "egress", None)
        if egress is not None:
            egress.close()
            self.egress = None
        if self._host_lock is not None:
            release_host(self._host_lock)
            self._host_lock = None

    def trust_layer(self, image_rootfs: Path, root_id: int) -> Path | None:
        """A read-only layer that makes a session trust this installation's CA."""
        if self.egress is None:
            return None
        return trust_layer(
            self.egress.ca, image_rootfs, self.data_dir / "network" / "trust", root_id
        )

    def resolv_conf(self, session_id: str) -> str:
        """The session's /etc/resolv.conf: its gateway, redirected to emberd's DNS server."""
        lease = self.pool.find(session_id)
        if lease is None or self.egress is None:
            return ""
        return f"nameserver {lease.host_ip}\noptions timeout:2 attempts:2\n"

    def attach(self, session_id: str, policy: Mapping[str, Any] | None, pid: int) -> SessionNetwork:
        """Give the process `pid` (a session's init) its network and policy."""
        return self._attach(session_id, policy, lambda lease: create_session_network(lease, pid))

    def attach_tap(
        self,
        session_id: str,
        policy: Mapping[str, Any] | None,
        tap: str,
        *,
        adopt_pid: int | None = None,
    ) -> SessionNetwork:
        """A microVM's network: a named namespace whose `eth0` is bridged with
        the tap device `tap`, for QEMU to open from inside that namespace.
        With `adopt_pid`, the namespace is that (running) QEMU's, its tap made
        already: a warm guest's, taken by a session."""
        return self._attach(
            session_id,
            policy,
            lambda lease: create_session_network(lease, tap=tap, adopt_pid=adopt_pid),
        )

    def _attach(
        self,
        session_id: str,
        policy: Mapping[str, Any] | None,
        make: Callable[[Lease], SessionNetwork],
    ) -> SessionNetwork:
        network = make(self.pool.lease(session_id))
        try:
            self._set_policy(session_id, network.host_if, str(network.lease.sandbox_ip), policy)
        except BaseException:
            self.detach(session_id)
            raise
        return network

    def _set_policy(
        self, session_id: str, host_if: str, address: str, policy: Mapping[str, Any] | None
    ) -> None:
        compiled = NetworkPolicy.from_stored(dict(policy or {}))
        if self.egress is not None:
            self.egress.policies[address] = compiled
        self.firewall.apply(host_if, address, compiled)

    def apply(self, session_id: str, policy: Mapping[str, Any] | None) -> None:
        lease = self.pool.find(session_id)
        address = str(lease.sandbox_ip) if lease is not None else ""
        self._set_policy(session_id, host_interface(session_id), address, policy)

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

    def lease(self, session_id: str) -> Lease | None:
        return self.pool.find(session_id)

    def netns(self, session_id: str) -> str | None:
        """The named namespace of a session attached with `attach_tap`, if attached."""
        return netns_name(session_id) if self.pool.find(session_id) is not None else None

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
        self.firewall.remove(
            host_interface(session_id), str(lease.sandbox_ip) if lease is not None else None
        )
        if lease is not None:
            if self.egress is not None:
                self.egress.policies.pop(str(lease.sandbox_ip), None)
            destroy_session_network(
                SessionNetwork(
                    session_id, lease, netns_name(session_id), host_interface(session_id)
                )
            )
            self.pool.release(session_id)
