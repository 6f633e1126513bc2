"""nftables rules for sessions: one table, `inet ember`, and nothing outside it.

Every session may reach the outside world per its policy, and never the
host itself (emberd included), other sessions, link-local or metadata
addresses, or private networks. Denied connections are rejected (a TCP
reset or an ICMP error), so clients fail fast instead of timing out.

    table inet ember
      set host           the host's own addresses
      set sources        session veth . its address: the only source it may use
      chain sources      (hook prerouting) from a veth: its own address, IPv4 only
      map verdicts       session veth -> its chain (s_<veth>)
      chain input        (hook input)   from a veth: replies, redirected DNS and proxy
      chain forward      (hook forward) from a veth: egress; to a veth: only replies
      chain egress       private, link-local, host: reject; then the session's chain (s_<veth>)
      map redirects      session veth -> its redirect chain (r_<veth>): DNS, proxy
      chain prerouting   (hook nat)     the session's redirects
      chain postrouting  (hook nat)     the session range -> masquerade
"""

from __future__ import annotations

import contextlib
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass

from pyroute2 import IPRoute

from ember.runtime import proc

from .links import VETH_PREFIX
from .policy import BLOCKED, NetworkPolicy
from .pool import NetworkError

TABLE = "ember"
# emberd's DNS server and proxy listen on every address: redirected traffic
# arrives on the session's own gateway address. The input chain refuses any
# connection to their ports that no redirect made.
LISTEN_ADDRESS = "0.0.0.0"  # noqa: S104
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


def session_rules(policy: NetworkPolicy) -> list[str]:
    """The forward-path verdict for a session's traffic that the proxy does not take."""
    if policy.mode == "allow-all":
        return ["accept"]
    rules: list[str] = []
    if policy.mode == "custom":
        if policy.deny_cidrs:
            rules += reject(f"ip daddr {elements(policy.deny_cidrs)}")
        if policy.allow_cidrs:
            rules.append(f"ip daddr {elements(policy.allow_cidrs)} accept")
        if policy.any_domain:
            rules.append("accept")
    return rules + reject()


def redirect_rules(policy: NetworkPolicy, ports: EgressPorts | None) -> list[str]:
    """What goes to emberd's DNS server and egress proxy instead of out.

    All DNS goes to Ember's server (whatever address the session asks),
    except under deny-all, where lookups are rejected at once. Under a
    domain allow-list, TCP goes to the proxy, except to the policy's CIDRs
    (allowed: straight out; denied: rejected in forwarding). With `*`
    (every name allowed), only HTTPS goes there, for its header rules.
    """
    if ports is None:
        return []
    rules: list[str] = []
    if policy.answers_dns:
        rules.append(f"meta l4proto {{ tcp, udp }} th dport 53 redirect to :{ports.dns}")
    if policy.uses_proxy:
        for cidrs in (policy.deny_cidrs, policy.allow_cidrs):
            if cidrs:
                rules.append(f"ip daddr {elements(cidrs)} return")
        only = "tcp dport 443" if policy.any_domain else "meta l4proto tcp"
        rules.append(f"{only} redirect to :{ports.proxy}")
    return rules


@dataclass(frozen=True)
class EgressPorts:
    """emberd's DNS server and egress proxy, listening on the host."""

    dns: int
    proxy: int

    def __str__(self) -> str:
        return elements(str(p) for p in (self.dns, self.proxy))


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
    def __init__(self, session_range: str, ports: EgressPorts | None = None) -> None:
        self.session_range = str(ipaddress.ip_network(session_range))
        self.ports = ports

    def _input_rules(self) -> list[str]:
        """From a session: replies, and its DNS and proxy traffic once redirected.

        The DNS server and the proxy listen on every address, so a
        connection to their ports that no redirect made is refused, from
        anywhere.
        """
        rules = [f"{FROM_SESSION} ct state established,related accept"]
        if self.ports is not None:
            services = f"meta l4proto {{ tcp, udp }} th dport {self.ports}"
            rules.append(f"{FROM_SESSION} {services} ct status dnat accept")
        rules += reject(FROM_SESSION)
        if self.ports is not None:
            rules += reject(f"{services} ct status & dnat == 0")
        return rules

    def install(self) -> None:
        """(Re)create Ember's table; each session's chains are then added by `apply`."""
        host = host_addresses()
        chains = [
            _chain(
                "input", self._input_rules(), "type filter hook input priority -10; policy accept;"
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
                "sources",
                [
                    f"{FROM_SESSION} iifname . ip saddr != @sources drop",
                    f"{FROM_SESSION} meta nfproto ipv6 drop",
                ],
                "type filter hook prerouting priority -150; policy accept;",
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
                "prerouting",
                [f"{FROM_SESSION} iifname vmap @redirects"],
                "type nat hook prerouting priority -100; policy accept;",
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
            f"    set sources {{ type ifname . ipv4_addr; }}\n"
            f"    map verdicts {{ type ifname : verdict; }}\n"
            f"    map redirects {{ type ifname : verdict; }}\n" + "".join(chains) + "}\n"
        )

    def apply(self, host_if: str, address: str, policy: NetworkPolicy) -> None:
        """Set the policy of the session on `host_if` whose address is `address`;
        takes effect on the next connection."""
        script = [f'add element inet {TABLE} sources {{ "{host_if}" . {address} }}']
        for chain, rules, verdicts in (
            (f"s_{host_if}", session_rules(policy), "verdicts"),
            (f"r_{host_if}", redirect_rules(policy, self.ports), "redirects"),
        ):
            script += [f"add chain inet {TABLE} {chain}", f"flush chain inet {TABLE} {chain}"]
            script += [f"add rule inet {TABLE} {chain} {rule}" for rule in rules]
            script.append(f'add element inet {TABLE} {verdicts} {{ "{host_if}" : jump {chain} }}')
        _nft("\n".join(script) + "\n")

    def remove(self, host_if: str, address: str | None) -> None:
        scripts = []
        if address is not None:
            scripts.append(f'delete element inet {TABLE} sources {{ "{host_if}" . {address} }}')
        for chain, verdicts in ((f"s_{host_if}", "verdicts"), (f"r_{host_if}", "redirects")):
            scripts += [
                f'delete element inet {TABLE} {verdicts} {{ "{host_if}" }}',
                f"delete chain inet {TABLE} {chain}",
            ]
        for script in scripts:
            with contextlib.suppress(NetworkError):  # already gone
                _nft(script)

    def uninstall(self) -> None:
        with contextlib.suppress(NetworkError):
            _nft(f"delete table inet {TABLE}")
