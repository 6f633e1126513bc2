"""Addresses for sessions: a /30 per session from a range Ember owns.

The range is checked against the host's own addresses and routes when the
pool opens, so a session can never shadow a network the host uses. Leases
are files (one per session) under a lock, so they survive restarts of emberd.
"""

from __future__ import annotations

import fcntl
import ipaddress
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from pyroute2 import IPRoute

DEFAULT_RANGE = "10.213.0.0/16"


class NetworkError(Exception):
    """A network could not be set up; the message says what and where."""


@dataclass(frozen=True)
class Lease:
    session_id: str
    subnet: ipaddress.IPv4Network

    @property
    def host_ip(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1

    @property
    def sandbox_ip(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 2


def host_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network the host has an address in or a route to (but the default)."""
    networks = []
    with IPRoute() as ipr:
        for route in ipr.get_routes(family=2):
            dst = route.get_attr("RTA_DST")
            if dst is not None and route["dst_len"] > 0:
                networks.append(ipaddress.IPv4Network(f"{dst}/{route['dst_len']}", strict=False))
        for addr in ipr.get_addr(family=2):
            networks.append(
                ipaddress.IPv4Network(
                    f"{addr.get_attr('IFA_ADDRESS')}/{addr['prefixlen']}", strict=False
                )
            )
    return networks


class AddressPool:
    def __init__(self, root: Path, cidr: str = DEFAULT_RANGE) -> None:
        self.range = ipaddress.ip_network(cidr)
        if not isinstance(self.range, ipaddress.IPv4Network):
            raise NetworkError(f"the session address range {cidr} must be IPv4")
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        clashes = [n for n in host_networks() if n.overlaps(self.range) and not self._ours(n)]
        if clashes:
            taken = ", ".join(map(str, clashes))
            raise NetworkError(
                f"session address range {cidr} overlaps the host's {taken}; choose another"
            )

    def _ours(self, network: ipaddress.IPv4Network) -> bool:
        """A /30 of our own range (a session's veth, possibly left from before a restart)."""
        return network.prefixlen >= 30 and network.subnet_of(self.range)  # type: ignore[arg-type]

    @contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _leases(self) -> dict[str, Lease]:
        leases = {}
        for path in self.root.glob("*.json"):
            data = json.loads(path.read_text())
            leases[data["session_id"]] = Lease(
                data["session_id"], ipaddress.IPv4Network(data["subnet"])
            )
        return leases

    def lease(self, session_id: str) -> Lease:
        """The session's lease, taking a free /30 if it has none."""
        with self._locked():
            leases = self._leases()
            if session_id in leases:
                return leases[session_id]
            taken = {lease.subnet for lease in leases.values()}
            # Also what the host routes already: a session network this pool no
            # longer knows (its data directory was replaced) must not be shadowed.
            taken |= {n for n in host_networks() if self._ours(n)}
            for subnet in self.range.subnets(new_prefix=30):
                if subnet not in taken:
                    lease = Lease(session_id, subnet)  # type: ignore[arg-type]
                    path = self.root / f"{session_id}.json"
                    tmp = path.with_suffix(".tmp")
                    tmp.write_text(json.dumps({"session_id": session_id, "subnet": str(subnet)}))
                    os.rename(tmp, path)
                    return lease
        raise NetworkError(f"no free addresses left in {self.range}")

    def find(self, session_id: str) -> Lease | None:
        """The session's lease, if it has one (a single file read: no lock needed)."""
        try:
            data = json.loads((self.root / f"{session_id}.json").read_text())
        except (OSError, ValueError):
            return None
        return Lease(data["session_id"], ipaddress.IPv4Network(data["subnet"]))

    def release(self, session_id: str) -> None:
        with self._locked():
            (self.root / f"{session_id}.json").unlink(missing_ok=True)

    def leases(self) -> list[Lease]:
        with self._locked():
            return list(self._leases().values())
