"""The upstream resolver that emberd's DNS server and egress proxy share (dnspython).

One cache for both: the address a session was given for a name is the
address the proxy finds for it, so a connection to it passes the proxy's
check for as long as the answer lives.
"""

from __future__ import annotations

from collections.abc import Sequence

import dns.exception
import dns.message
import dns.query
import dns.rdatatype
import dns.resolver

TIMEOUT_S = 3.0
CACHE_ENTRIES = 4096


class ResolveError(Exception):
    """The upstream resolver did not answer."""


class UpstreamResolver:
    def __init__(self, nameservers: Sequence[str] = ()) -> None:
        """`nameservers`: IPv4 addresses; none means the host's /etc/resolv.conf."""
        resolver = dns.resolver.Resolver(configure=not nameservers)
        if nameservers:
            resolver.nameservers = list(nameservers)
        resolver.lifetime = TIMEOUT_S
        resolver.cache = dns.resolver.LRUCache(CACHE_ENTRIES)
        self._resolver = resolver

    @property
    def nameservers(self) -> list[str]:
        return [str(n) for n in self._resolver.nameservers]

    def lookup(self, name: str) -> dns.resolver.Answer | None:
        """The A records of `name` (cached); None when the name does not exist."""
        try:
            return self._resolver.resolve(name, dns.rdatatype.A, search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
            return None
        except dns.exception.DNSException as exc:
            raise ResolveError(f"cannot resolve {name}: {exc}") from exc

    def addresses(self, name: str) -> set[str]:
        answer = self.lookup(name)
        return {r.address for r in answer} if answer is not None else set()

    def forward(self, query: dns.message.Message, *, tcp: bool = False) -> dns.message.Message:
        """Ask the first upstream nameserver the session's own question."""
        where = self.nameservers[0]
        try:
            if tcp:
                return dns.query.tcp(query, where, timeout=TIMEOUT_S)
            return dns.query.udp(query, where, timeout=TIMEOUT_S, ignore_unexpected=True)
        except (dns.exception.DNSException, OSError) as exc:
            raise ResolveError(f"upstream {where} did not answer: {exc}") from exc
