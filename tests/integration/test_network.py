"""Per-session networks: namespaces, NAT egress, isolation and CIDR policies.

All traffic stays on this machine: an "upstream" network namespace made
here plays the internet, at a TEST-NET-style address outside the ranges
sessions may never reach.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from ember.network import (
    AddressPool,
    Firewall,
    NetworkPolicy,
    SessionNetwork,
    create_session_network,
    destroy_session_network,
)
from ember.testing.netlab import UPSTREAM_IP, UPSTREAM_NET, Upstream, run

from ..conftest import DATA_DIR, RUN_PREFIX

pytestmark = pytest.mark.integration

SESSION_RANGE = "10.213.0.0/16"


def curl(netns: str | None, url: str) -> str:
    """The HTTP status, from inside a namespace (or the host); 000 when the connection failed."""
    where = ["ip", "netns", "exec", netns] if netns else []
    done = run(
        *where, "curl", "-s", "-m", "5", "-o", "/dev/null", "-w", "%{http_code}", url, check=False
    )
    return done.stdout.strip()


def wait_for_server(netns: str | None, url: str) -> None:
    for _ in range(200):
        if curl(netns, url) == "200":
            return
        time.sleep(0.05)
    raise AssertionError(f"the test server at {url} did not come up")


@pytest.fixture(scope="module")
def firewall(upstream: Upstream) -> Iterator[Firewall]:
    Path("/proc/sys/net/ipv4/ip_forward").write_text("1")
    fw = Firewall(SESSION_RANGE)
    fw.install()
    yield fw
    fw.uninstall()


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> AddressPool:
    return AddressPool(tmp_path_factory.mktemp("leases"), SESSION_RANGE)


@dataclass
class Networks:
    pool: AddressPool
    firewall: Firewall
    made: list[SessionNetwork]


@pytest.fixture
def networks(firewall: Firewall, pool: AddressPool) -> Iterator[Networks]:
    """Session networks a test makes, all removed afterwards."""
    state = Networks(pool, firewall, [])
    yield state
    for network in state.made:
        firewall.remove(network.host_if, str(network.lease.sandbox_ip))
        destroy_session_network(network)
        pool.release(network.session_id)


def session_network(
    networks: Networks, firewall: Firewall, policy: NetworkPolicy
) -> SessionNetwork:
    network = create_session_network(networks.pool.lease(f"{RUN_PREFIX}-{uuid.uuid4().hex[:6]}"))
    networks.made.append(network)
    firewall.apply(network.host_if, str(network.lease.sandbox_ip), policy)
    return network


def test_allow_all_reaches_upstream_through_nat(networks, firewall, upstream: Upstream) -> None:
    network = session_network(networks, firewall, NetworkPolicy("allow-all"))
    assert curl(network.netns, f"http://{UPSTREAM_IP}:8080/") == "200"


def test_deny_all_reaches_nothing_and_fails_fast(networks, firewall, upstream: Upstream) -> None:
    network = session_network(networks, firewall, NetworkPolicy("deny-all"))
    started = time.monotonic()
    assert curl(network.netns, f"http://{UPSTREAM_IP}:8080/") == "000"
    assert time.monotonic() - started < 4  # rejected, not dropped into a timeout


def test_cidr_allow_and_deny_and_live_change(networks, firewall, upstream: Upstream) -> None:
    network = session_network(
        networks, firewall, NetworkPolicy("custom", allow_cidrs=(f"{UPSTREAM_NET}.0/24",))
    )
    assert curl(network.netns, f"http://{UPSTREAM_IP}:8080/") == "200"
    firewall.apply(
        network.host_if,
        str(network.lease.sandbox_ip),
        NetworkPolicy(
            "custom", allow_cidrs=(f"{UPSTREAM_NET}.0/24",), deny_cidrs=(f"{UPSTREAM_IP}/32",)
        ),
    )
    assert curl(network.netns, f"http://{UPSTREAM_IP}:8080/") == "000"  # deny wins, at once
    firewall.apply(
        network.host_if,
        str(network.lease.sandbox_ip),
        NetworkPolicy("custom", allow_cidrs=("203.0.113.0/24",)),
    )
    assert curl(network.netns, f"http://{UPSTREAM_IP}:8080/") == "000"


def test_sessions_never_reach_the_host_each_other_or_metadata(
    networks, firewall, upstream: Upstream
) -> None:
    first = session_network(networks, firewall, NetworkPolicy("allow-all"))
    second = session_network(networks, firewall, NetworkPolicy("allow-all"))
    # A server in the second session, reachable from its own namespace only.
    server = subprocess.Popen(
        [
            "ip",
            "netns",
            "exec",
            second.netns,
            "/usr/bin/python3",
            "-m",
            "http.server",
            "8081",
            "--bind",
            str(second.lease.sandbox_ip),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_server(second.netns, f"http://{second.lease.sandbox_ip}:8081/")
        targets = [
            f"http://{second.lease.sandbox_ip}:8081/",  # another session
            f"http://{first.lease.host_ip}:22/",  # the host, through the session's gateway
            f"http://{UPSTREAM_NET}.2:8080/",  # the host's address on another network
            "http://169.254.169.254/",  # metadata
            "http://10.0.0.1/",  # a private network
        ]
        for url in targets:
            assert curl(first.netns, url) == "000", url
    finally:
        server.kill()
        server.wait()


def test_a_session_cannot_send_from_an_address_not_its_own(
    networks, firewall, upstream: Upstream
) -> None:
    """The DNS server and the proxy tell sessions apart by source address."""
    network = session_network(networks, firewall, NetworkPolicy("allow-all"))
    # An address of the session range that routes back to this session, so
    # only the source check can stop the exchange.
    spoofed = "10.213.255.254"
    where = ("ip", "netns", "exec", network.netns)
    run(*where, "ip", "addr", "add", f"{spoofed}/32", "dev", "eth0")
    run("ip", "route", "add", f"{spoofed}/32", "dev", network.host_if)
    try:
        done = run(*where, "curl", "-s", "-m", "2", "--interface", spoofed, "-o", "/dev/null",
                   "-w", "%{http_code}", f"http://{UPSTREAM_IP}:8080/", check=False)  # fmt: skip
        assert done.stdout.strip() == "000"
        assert curl(network.netns, f"http://{UPSTREAM_IP}:8080/") == "200"  # its own works
    finally:
        run("ip", "route", "del", f"{spoofed}/32", check=False)


def test_nothing_is_left_behind(firewall: Firewall, pool: AddressPool) -> None:
    network = create_session_network(pool.lease(f"{RUN_PREFIX}-gone"))
    firewall.apply(network.host_if, str(network.lease.sandbox_ip), NetworkPolicy("allow-all"))
    firewall.remove(network.host_if, str(network.lease.sandbox_ip))
    destroy_session_network(network)
    pool.release(network.session_id)
    assert network.netns not in run("ip", "netns", "list").stdout
    assert network.host_if not in run("ip", "-br", "link").stdout
    table = run("nft", "list", "table", "inet", "ember").stdout
    assert f"s_{network.host_if}" not in table and f"r_{network.host_if}" not in table
    assert network.host_if not in run("nft", "list", "set", "inet", "ember", "sources").stdout


def test_a_restarted_manager_restores_adopted_sessions_and_removes_the_rest(
    firewall: Firewall, upstream: Upstream, tmp_path: Path
) -> None:
    """emberd rebuilds its table at start: adopted sessions get their chains
    back, and whatever a crashed emberd left for other sessions goes."""
    from ember.network import NetworkManager

    before = NetworkManager(tmp_path, manage_host=False)  # the crashed emberd's state
    kept, gone = (f"{RUN_PREFIX}-{name}-{uuid.uuid4().hex[:6]}" for name in ("kept", "gone"))
    networks = [create_session_network(before.pool.lease(sid)) for sid in (kept, gone)]
    for network in networks:
        before.apply(network.session_id, {"mode": "allow-all"})
    after = NetworkManager(tmp_path)  # the next emberd, after a crash
    try:
        assert curl(networks[0].netns, f"http://{UPSTREAM_IP}:8080/") == "000"  # no chain yet
        after.restore({kept: {"mode": "allow-all"}})
        assert curl(networks[0].netns, f"http://{UPSTREAM_IP}:8080/") == "200"
        assert [lease.session_id for lease in after.pool.leases()] == [kept]
        assert networks[1].host_if not in run("ip", "-br", "link").stdout
        assert networks[1].netns not in run("ip", "netns", "list").stdout
        assert f"s_{networks[1].host_if}" not in run("nft", "list", "table", "inet", "ember").stdout
    finally:
        for network in networks:
            before.detach(network.session_id)
        after.close()
        firewall.install()  # as the module's other tests expect it
    assert networks[0].netns not in run("ip", "netns", "list").stdout


async def test_sessions_get_their_network_and_policy_changes_live(
    upstream: Upstream, image
) -> None:
    from ember.network import NetworkManager
    from ember.runtime import SessionSpec
    from ember.runtime.container import ContainerRuntime, default_id_shift

    from ..conftest import TestSession

    # pyroute2's synchronous API runs its own event loop: keep it off ours.
    network = await asyncio.to_thread(NetworkManager, Path(DATA_DIR))
    runtime = ContainerRuntime(DATA_DIR, id_shift=default_id_shift(), pool_size=0, network=network)
    session_id = f"{RUN_PREFIX}-net-{uuid.uuid4().hex[:6]}"
    try:
        await runtime.start(
            SessionSpec(session_id, image.image_id, network_policy={"mode": "allow-all"})
        )
        session = TestSession(runtime, session_id)
        fetch = [
            "curl",
            "-s",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            f"http://{UPSTREAM_IP}:8080/",
        ]
        assert (await session.run(fetch)).stdout == b"200"
        await runtime.set_network_policy(session_id, {"mode": "deny-all"})
        assert (await session.run(fetch)).stdout == b"000"
        await runtime.set_network_policy(
            session_id, {"mode": "custom", "subnets": {"allow": [f"{UPSTREAM_NET}.0/24"]}}
        )
        assert (await session.run(fetch)).stdout == b"200"
        assert (await session.run(["ip", "-br", "addr", "show", "eth0"])).exit_code == 0
    finally:
        if session_id in await runtime.sessions():
            await runtime.discard(session_id)
        network.firewall.uninstall()
        runtime.close()
    assert netns_name_of(session_id) not in run("ip", "netns", "list").stdout


def netns_name_of(session_id: str) -> str:
    from ember.network.links import netns_name

    return netns_name(session_id)
