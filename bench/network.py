"""Networking: attach time, route vs direct round trip, NAT vs plain veth throughput.

These run after the other metrics, on their own: they rebuild Ember's
nftables table, so no networked emberd may run beside them (the route
metrics start one of their own first, and stop it before the rest).

  net_attach                NetworkManager.attach of a fresh process's network
                            namespace: lease, veth pair, addresses, route and
                            the policy chain (what a networked start adds)
  route_roundtrip           GET / through emberd's route (Host
                            sb-...-8000.localhost) to `python3 -m http.server`
                            in a sandbox, on a kept-alive connection
  direct_roundtrip          the same GET straight to the session's address
  nat_throughput            one TCP stream from a session network, NATed by
                            the `inet ember` table, into an "upstream"
                            namespace at 198.18.0.1 that discards it
  baseline_veth_throughput  the same stream from the host over a plain veth
  proxy_throughput          the same stream from a session network whose policy
                            allows the name sink.test only: it starts with an
                            HTTP request head (Host: sink.test), so emberd's
                            egress proxy checks the name, resolves it with the
                            upstream's DNS server and splices the rest

All traffic stays in namespaces made here (`ember.testing.netlab`), named
after the run's prefix and removed on the way out.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import time
from pathlib import Path

import httpx

from ember.network import EgressSettings, Firewall, NetworkManager, create_session_network
from ember.network.pool import DEFAULT_RANGE, AddressPool
from ember.testing.netlab import UPSTREAM_IP, upstream_namespace
from http_api import HttpBench
from measure import ms_since, now

PYTHON = "/usr/bin/python3"
SINK_PORT = 9000
STREAM_BYTES = 256 * 1024 * 1024
SANDBOX_PORT = 8000
SINK_NAME = "sink.test"

# The upstream's sink answers once it has read the whole stream: the
# sender's clock stops when the last byte has been received, not merely
# queued. An HTTP request head first names the destination for the proxy.
SENDER = f"""
import socket, sys, time
size, block = int(sys.argv[1]), b"\\0" * (1 << 20)
started = time.perf_counter()
c = socket.create_connection(("{UPSTREAM_IP}", {SINK_PORT}))
c.sendall(b"POST / HTTP/1.1\\r\\nHost: {SINK_NAME}\\r\\nContent-Length: %d\\r\\n\\r\\n" % size)
for _ in range(size // len(block)):
    c.sendall(block)
c.shutdown(socket.SHUT_WR)
assert c.recv(64)
print(time.perf_counter() - started)
"""


def _run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=120).stdout


class NetworkBench:
    """The upstream namespace and this run's session networks, all removed by close()."""

    def __init__(self, data_dir: str, prefix: str) -> None:
        self.prefix = prefix
        self.manager_dir = Path(data_dir) / f"{prefix}-network"
        self.lab = contextlib.ExitStack()
        self.manager: NetworkManager | None = None
        self.session_ids: list[str] = []
        self.sleepers: list[subprocess.Popen[bytes]] = []

    def open(self) -> None:
        self.manager_dir.mkdir(parents=True, exist_ok=True)
        self.lab.enter_context(upstream_namespace(self.prefix, self.manager_dir))
        self.manager = NetworkManager(self.manager_dir, egress=EgressSettings([UPSTREAM_IP]))

    def close(self) -> None:
        if self.manager is not None:
            for session_id in self.session_ids:
                self.manager.detach(session_id)
            self.manager.close()
        # Also when open() failed early: the route metrics' emberd leaves its table too.
        Firewall(DEFAULT_RANGE).uninstall()
        for process in self.sleepers:
            process.kill()
            process.wait()
        self.lab.close()
        shutil.rmtree(self.manager_dir, ignore_errors=True)

    def _session_id(self, name: str) -> str:
        session_id = f"{self.prefix}-{name}-{len(self.session_ids)}"
        self.session_ids.append(session_id)
        return session_id

    def attach_ms(self) -> float:
        """One attach to a new process's namespace; the process and network go afterwards."""
        assert self.manager is not None
        sleeper = subprocess.Popen(["unshare", "--net", "sleep", "infinity"])
        self.sleepers.append(sleeper)
        ours = Path("/proc/self/ns/net").readlink()
        while Path(f"/proc/{sleeper.pid}/ns/net").readlink() == ours:  # until unshare is done
            time.sleep(0.001)
        session_id = self._session_id("attach")
        started = now()
        self.manager.attach(session_id, {"mode": "allow-all"}, sleeper.pid)
        elapsed = ms_since(started)
        self.manager.detach(session_id)
        self.session_ids.remove(session_id)
        sleeper.kill()
        sleeper.wait()
        self.sleepers.remove(sleeper)
        return elapsed

    def session_network(self, policy: dict[str, object]) -> str:
        """A session network (a named namespace) with `policy`; its namespace's name."""
        assert self.manager is not None
        session_id = self._session_id("stream")
        network = create_session_network(self.manager.pool.lease(session_id))
        self.manager.apply(session_id, policy)
        return network.netns

    @staticmethod
    def stream_seconds(netns: str | None) -> float:
        where = ("ip", "netns", "exec", netns) if netns else ()
        return float(_run(*where, PYTHON, "-c", SENDER, str(STREAM_BYTES)))


class RouteBench:
    """A networked emberd with one sandbox serving HTTP on port 8000."""

    def __init__(self, data_dir: str, prefix: str) -> None:
        self.http = HttpBench(data_dir, f"{prefix}-net", extra_args=("--network",))
        self.route: httpx.AsyncClient | None = None
        self.direct: httpx.AsyncClient | None = None
        self.host = ""
        self.name = ""
        self.closed = False

    async def open(self) -> None:
        await self.http.open()
        api = self.http.api
        self.name = self.http.new_name()
        created = await api.post("/v3/sandboxes", json={"name": self.name, "ports": [SANDBOX_PORT]})
        created.raise_for_status()
        body = created.json()
        session_id = body["session"]["id"]
        self.host = f"{body['routes'][0]['subdomain']}.localhost"
        started = await api.post(
            f"/v2/sandboxes/sessions/{session_id}/cmd",
            json={"command": PYTHON, "args": ["-m", "http.server", str(SANDBOX_PORT)]},
        )
        started.raise_for_status()
        # pyroute2's synchronous API (the pool checks the host's routes) runs its own loop.
        pool = await asyncio.to_thread(
            AddressPool, Path(self.http.server_dir) / "network" / "leases"
        )
        lease = pool.find(session_id)
        assert lease is not None, "the networked emberd gave its session no address"
        self.route = httpx.AsyncClient(base_url=str(api.base_url), headers={"host": self.host})
        self.direct = httpx.AsyncClient(base_url=f"http://{lease.sandbox_ip}:{SANDBOX_PORT}")
        deadline = time.monotonic() + 30
        while True:  # until the server in the sandbox listens
            try:
                if (await self.direct.get("/")).status_code == 200:
                    break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    async def close(self) -> None:
        """Idempotent: called after the metric and again on the way out."""
        if self.closed:
            return
        self.closed = True
        for client in (self.route, self.direct):
            if client is not None:
                await client.aclose()
        try:
            if self.name:  # through emberd, so its network goes too
                with contextlib.suppress(httpx.HTTPError):  # never made, or emberd died
                    await self.http.delete(self.name)
        finally:
            await self.http.close()

    @staticmethod
    async def _get_ms(client: httpx.AsyncClient | None) -> float:
        assert client is not None
        started = now()
        response = await client.get("/")
        response.raise_for_status()
        return ms_since(started)

    async def route_ms(self) -> float:
        return await self._get_ms(self.route)

    async def direct_ms(self) -> float:
        return await self._get_ms(self.direct)
