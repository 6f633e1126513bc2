"""nftables rules for sessions: one table, `inet ember`, and nothing outside it.

Every session may reach the outside world per its policy, and never the
host itself (emberd included), other sessions, link-local or metadata
addresses, or private networks. Denied connections are rejected (a TCP
reset or an ICMP error), so clients fail fast instead of timing out.

    table inet ember
      set host           the host's own addresses
      map verdicts       session veth -> its chain (s_<veth>)
      chain input        (hook input)   from a veth: only replies
      chain forward      (hook forward) from a veth: egress; to a veth: only replies
      chain egress       private, link-local, host: reject; then the session's chain
      chain postrouting  (hook nat)     the session range -> masquerade
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from pyroute2 import IPRoute

from ember.runtime import proc

from .links import VETH_PREFIX
from .pool import NetworkError

TABLE = "ember"
# Never reachable from a session, whatever its policy.
BLOCKED = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "224.0.0.0/4",
    "240.0.0.0/4",
)
FROM_SESSION = f'iifname "{VETH_PREFIX}*"'
TO_SESSION = f'oifname "{VETH_PREFIX}*"'


def reject(match: str = "") -> list[str]:
    """TCP gets a reset, everything else an ICMP admin-prohibited: callers fail at once."""
    prefix = f"{match} " if match else ""
    return [
        f"{prefix}meta l4proto tcp reject with tcp reset",
        f"{prefix}reject with icmpx type admin-prohibited",
    ]


def elements(values: Iterable[str]) -> str:
    return "{ " + ", ".join(values) + " }"


@dataclass(frozen=True)
class NetworkPolicy:
    """What a session may reach: "allow-all", "deny-all", or CIDR lists (deny wins).

    Domain rules need the egress proxy, which does not exist yet: a custom
    policy allows its CIDRs only, so its allowed domains are refused
    (closed, not open).
    """

    mode: str = "allow-all"
    allow_cidrs: tuple[str, ...] = field(default=())
    deny_cidrs: tuple[str, ...] = field(default=())

    @classmethod
    def from_stored(cls, stored: dict[str, object] | None) -> NetworkPolicy:
        stored = stored or {}
        subnets = stored.get("subnets") or {}
        assert isinstance(subnets, dict)
        return cls(
            str(stored.get("mode", "allow-all")),
            tuple(subnets.get("allow", ())),
            tuple(subnets.get("deny", ())),
        )

    def rules(self) -> list[str]:
        if self.mode == "allow-all":
            return ["accept"]
        rules: list[str] = []
        if self.mode != "deny-all":
            if self.deny_cidrs:
                rules += reject(f"ip daddr {elements(self.deny_cidrs)}")
            if self.allow_cidrs:
                rules.append(f"ip daddr {elements(self.allow_cidrs)} accept")
        return rules + reject()


def _nft(script: str) -> None:
    try:
        proc.run(["nft", "-f", "-"], input_bytes=script.encode(), timeout_s=30)
    except proc.ProcessError as exc:
        raise NetworkError(f"nftables refused the rules: {exc}") from exc


def host_addresses() -> list[str]:
    with IPRoute() as ipr:
        return sorted({str(a.get_attr("IFA_ADDRESS")) for a in ipr.get_addr(family=2)})


def _chain(name: str, rules: Iterable[str], hook: str = "") -> str:
    lines = [hook, *rules] if hook else list(rules)
    body = "".join(f"        {line}\n" for line in lines)
    return f"    chain {name} {{\n{body}    }}\n"


class Firewall:
    def __init__(self, session_range: str) -> None:
        self.session_range = str(ipaddress.ip_network(session_range))

    def install(self) -> None:
        """(Re)create Ember's table; each session's chain is then added by `apply`."""
        host = host_addresses()
        chains = [
            _chain(
                "input",
                [f"{FROM_SESSION} ct state established,related accept", *reject(FROM_SESSION)],
                "type filter hook input priority -10; policy accept;",
            ),
            _chain(
                "forward",
                [
                    f"{FROM_SESSION} jump egress",
                    f"{TO_SESSION} ct state established,related accept",
                    *reject(TO_SESSION),
                ],
                "type filter hook forward priority -10; policy accept;",
            ),
            _chain(
                "egress",
                [
                    "ct state established,related accept",
                    *reject(f"ip daddr {elements(BLOCKED)}"),
                    *reject("ip daddr @host"),
                    "iifname vmap @verdicts",
                    *reject(),
                ],
            ),
            _chain(
                "postrouting",
                [f'ip saddr {self.session_range} oifname != "{VETH_PREFIX}*" masquerade'],
                "type nat hook postrouting priority 100; policy accept;",
            ),
        ]
        host_set = f"elements = {elements(host)};" if host else ""
        _nft(
            f"table inet {TABLE}\ndelete table inet {TABLE}\ntable inet {TABLE} {{\n"
            f"    set host {{ type ipv4_addr; {host_set} }}\n"
            f"    map verdicts {{ type ifname : verdict; }}\n" + "".join(chains) + "}\n"
        )

    def apply(self, host_if: str, policy: NetworkPolicy) -> None:
        """Set a session's policy (by its veth); takes effect on the next connection."""
        chain = f"s_{host_if}"
        rules = "".join(f"add rule inet {TABLE} {chain} {rule}\n" for rule in policy.rules())
        _nft(
            f"add chain inet {TABLE} {chain}\nflush chain inet {TABLE} {chain}\n{rules}"
            f'add element inet {TABLE} verdicts {{ "{host_if}" : jump {chain} }}\n'
        )

    def remove(self, host_if: str) -> None:
        chain = f"s_{host_if}"
        for script in (
            f'delete element inet {TABLE} verdicts {{ "{host_if}" }}',
            f"delete chain inet {TABLE} {chain}",
        ):
            with contextlib.suppress(NetworkError):  # already gone
                _nft(script)

    def uninstall(self) -> None:
        with contextlib.suppress(NetworkError):
            _nft(f"delete table inet {TABLE}")
