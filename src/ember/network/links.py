"""A session's network namespace and the veth pair that joins it to the host (pyroute2)."""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pyroute2 import IPRoute, netns
from pyroute2 import config as pyroute2_config
from pyroute2.netlink.exceptions import NetlinkError

from .pool import Lease, NetworkError

# pyroute2 forks a child for netns.create (and per NetNS) and ends it with
# SIGTERM. A forked child shares its parent's signal wakeup fd (asyncio's
# add_signal_handler), so the child's SIGTERM could reach the parent's event
# loop as the parent's own.
# This makes the child reset SIGTERM to the default action first thing.
pyroute2_config.disable_mp_signal = True

NETNS_PREFIX = "ember-"
VETH_PREFIX = "ev"  # host side; the firewall matches "ev*"


@dataclass(frozen=True)
class SessionNetwork:
    session_id: str
    lease: Lease
    netns: str  # a name under /run/netns, or a /proc/<pid>/ns/net path
    host_if: str

    @property
    def netns_path(self) -> str:
        return self.netns if self.netns.startswith("/") else f"/run/netns/{self.netns}"


def host_interface(session_id: str) -> str:
    """`ev` + 12 hex digits: unique per session, within the 15-character limit."""
    return VETH_PREFIX + hashlib.sha256(session_id.encode()).hexdigest()[:12]


def netns_name(session_id: str) -> str:
    return NETNS_PREFIX + session_id


def inside_namespace(path: str, configure: Callable[[IPRoute], None]) -> None:
    """Run `configure` with a netlink socket inside the network namespace at `path`.

    pyroute2's NetNS forks a child per namespace (~7 ms of every attach);
    a netlink socket belongs to the namespace it was opened in, so instead a
    short-lived thread joins the namespace (setns(2) moves only the calling
    thread) and opens the socket there.
    """
    failure: list[BaseException] = []

    def run() -> None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                netns.setns(fd, flags=0)  # this thread only
            finally:
                os.close(fd)
            with IPRoute() as ns:
                configure(ns)
        except BaseException as exc:  # handed to the caller's thread
            failure.append(exc)

    # The thread ends inside the namespace: it is never reused for anything else.
    thread = threading.Thread(target=run, name="ember-netns")
    thread.start()
    thread.join()
    if failure:
        raise failure[0]


def create_session_network(
    lease: Lease, pid: int | None = None, *, tap: str | None = None, adopt_pid: int | None = None
) -> SessionNetwork:
    """`lo` and `eth0` (the lease's sandbox address, routed via the host) in a namespace.

    With `pid`, the namespace is that process's: a container's, made by runc
    inside the session's user namespace (which mounting sysfs needs).
    Without, a named namespace is made. With `tap` (a microVM's), `eth0`
    gets no address: it is bridged with a tap device of that name, and the
    guest behind the tap takes the sandbox address itself. With `adopt_pid`
    too, the named namespace is that process's (a warm microVM's QEMU), whose
    tap exists already.
    """
    name = f"/proc/{pid}/ns/net" if pid else netns_name(lease.session_id)
    network = SessionNetwork(lease.session_id, lease, name, host_interface(lease.session_id))
    destroy_session_network(network)  # whatever a crash left under these names
    peer: dict[str, object] = {"ifname": "eth0"}
    peer.update({"net_ns_pid": pid} if pid else {"net_ns_fd": name})
    try:
        if adopt_pid is not None:
            netns.attach(name, adopt_pid)  # a bind mount of its namespace, as `create` makes
        elif pid is None:
            netns.create(name)
        with IPRoute() as ipr:
            ipr.link("add", ifname=network.host_if, kind="veth", peer=peer)
            index = ipr.link_lookup(ifname=network.host_if)[0]
            ipr.addr("add", index=index, address=str(lease.host_ip), prefixlen=30)
            ipr.link("set", index=index, state="up")

        def configure(ns: IPRoute) -> None:
            ns.link("set", index=ns.link_lookup(ifname="lo")[0], state="up")
            eth = ns.link_lookup(ifname="eth0")[0]
            if tap is not None:
                bridge_with_tap(ns, eth, tap, create=adopt_pid is None)
                return
            ns.addr("add", index=eth, address=str(lease.sandbox_ip), prefixlen=30)
            ns.link("set", index=eth, state="up")
            ns.route("add", dst="0.0.0.0/0", gateway=str(lease.host_ip))

        inside_namespace(network.netns_path, configure)
    except (NetlinkError, OSError) as exc:
        destroy_session_network(network)
        raise NetworkError(f"session {lease.session_id}: cannot set up its network: {exc}") from exc
    return network


def bridge_with_tap(ns: IPRoute, eth: int, tap: str, *, create: bool = True) -> None:
    """`br0` joining `eth0` and a tap device (new, unless `create` is false): the
    guest's frames reach the host's veth."""
    if create:
        ns.link("add", ifname=tap, kind="tuntap", mode="tap")
    ns.link("add", ifname="br0", kind="bridge")
    bridge = ns.link_lookup(ifname="br0")[0]
    tap_index = ns.link_lookup(ifname=tap)[0]
    for index in (eth, tap_index):
        ns.link("set", index=index, master=bridge)
        ns.link("set", index=index, state="up")
    ns.link("set", index=bridge, state="up")


def destroy_session_network(network: SessionNetwork) -> None:
    """Remove the veth pair and a named namespace; missing pieces are fine."""
    with IPRoute() as ipr:
        for index in ipr.link_lookup(ifname=network.host_if):
            with contextlib.suppress(NetlinkError):
                ipr.link("del", index=index)
    if not network.netns.startswith("/") and os.path.exists(network.netns_path):
        with contextlib.suppress(OSError):
            netns.remove(network.netns)
