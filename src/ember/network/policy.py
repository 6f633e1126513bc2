"""A session's network policy as the enforcing parts read it: nftables, DNS and the proxy.

Built from the stored wire form (reference §7.2): "allow-all", "deny-all",
or a custom policy of domain patterns (a list, or a mapping to header
injection rules), allowed CIDRs and denied CIDRs (deny wins).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

# RE2 as the reference specifies: linear time, so a policy's regex cannot
# stall the proxy on a request the sandbox crafted.
import re2  # type: ignore[import-untyped]

ANY_DOMAIN = "*"
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


def is_blocked(address: str, host_addresses: Iterable[str] = ()) -> bool:
    """Whether `address` is one no session may reach: private, link-local, the host's own."""
    ip = ipaddress.ip_address(address)
    if ip.version != 4:
        return True  # sessions have IPv4 only
    return address in host_addresses or any(ip in ipaddress.ip_network(b) for b in BLOCKED)


def normalise_name(name: str) -> str:
    return name.strip().rstrip(".").lower()


def is_ip_literal(name: str) -> bool:
    try:
        ipaddress.ip_address(name.strip("[]"))
    except ValueError:
        return False
    return True


def domain_matches(pattern: str, name: str) -> bool:
    """`*` stands for one label; a leading `*` for one or more (any subdomain).

    `*.good.test` matches `a.good.test` and `a.b.good.test`, not `good.test`;
    `www.*.test` matches `www.x.test` only; `*` alone matches every name.
    """
    pattern, name = normalise_name(pattern), normalise_name(name)
    if pattern == ANY_DOMAIN:
        return True
    want, have = pattern.split("."), name.split(".")
    if want[0] == "*":
        if len(have) < len(want):
            return False
        have = ["*", *have[len(have) - len(want) + 1 :]]
    if len(want) != len(have):
        return False
    return all(w == "*" or w == h for w, h in zip(want, have, strict=True))


def _text_matches(matcher: Mapping[str, str] | None, text: str, *, fold: bool = False) -> bool:
    if not matcher:
        return True
    if fold:
        text = text.lower()
    if "exact" in matcher:
        return text == (matcher["exact"].lower() if fold else matcher["exact"])
    if "startsWith" in matcher:
        return text.startswith(matcher["startsWith"].lower() if fold else matcher["startsWith"])
    return re2.search(matcher["regex"], text) is not None


def _pairs_match(
    matchers: Sequence[Mapping[str, Any]] | None, pairs: Sequence[tuple[str, str]], *, fold: bool
) -> bool:
    """Every matcher (AND) must hold for at least one pair."""
    return all(
        any(
            _text_matches(m.get("key"), k, fold=fold) and _text_matches(m.get("value"), v)
            for k, v in pairs
        )
        for m in matchers or ()
    )


@dataclass(frozen=True)
class RequestInfo:
    method: str
    target: str  # as sent: path and query
    headers: tuple[tuple[str, str], ...]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> list[tuple[str, str]]:
        return parse_qsl(self.target.partition("?")[2], keep_blank_values=True)


@dataclass(frozen=True)
class InjectionRule:
    """Headers the proxy sets on a domain's HTTPS requests that match `match`."""

    domain: str
    headers: tuple[tuple[str, str], ...]
    match: Mapping[str, Any] | None = None

    def applies_to(self, request: RequestInfo) -> bool:
        match = self.match or {}
        methods = match.get("method")
        if methods and request.method.upper() not in {m.upper() for m in methods}:
            return False
        return (
            _text_matches(match.get("path"), request.path)
            and _pairs_match(match.get("queryString"), request.query, fold=False)
            and _pairs_match(match.get("headers"), request.headers, fold=True)
        )


def inject_headers(
    rules: Iterable[InjectionRule], request: RequestInfo
) -> list[tuple[str, str]] | None:
    """The request's headers with matching rules' headers set (replacing same-named
    ones), or None when no rule matches."""
    headers = list(request.headers)
    matched = False
    for rule in rules:
        if not rule.applies_to(request):
            continue
        matched = True
        for name, value in rule.headers:
            headers = [(k, v) for k, v in headers if k.lower() != name.lower()]
            headers.append((name, value))
    return headers if matched else None


def _cidrs(values: Iterable[str]) -> tuple[str, ...]:
    return tuple(str(ipaddress.ip_network(v, strict=False)) for v in values)


@dataclass(frozen=True)
class NetworkPolicy:
    mode: str = "allow-all"  # "allow-all" | "deny-all" | "custom"
    domains: tuple[str, ...] = field(default=())
    allow_cidrs: tuple[str, ...] = field(default=())
    deny_cidrs: tuple[str, ...] = field(default=())
    injections: tuple[InjectionRule, ...] = field(default=())

    @classmethod
    def from_stored(cls, stored: Mapping[str, Any] | None) -> NetworkPolicy:
        stored = stored or {}
        mode = str(stored.get("mode", "allow-all"))
        if mode in ("allow-all", "deny-all"):
            return cls(mode)
        allow = stored.get("allow") or []
        injections: list[InjectionRule] = []
        if isinstance(allow, Mapping):
            for domain, rules in allow.items():
                for rule in rules:
                    headers = tuple(
                        (name, value)
                        for transform in rule.get("transform") or ()
                        for name, value in (transform.get("headers") or {}).items()
                    )
                    if headers:
                        injections.append(InjectionRule(domain, headers, rule.get("match")))
        subnets = stored.get("subnets") or {}
        return cls(
            "custom",
            tuple(normalise_name(d) for d in allow),
            _cidrs(subnets.get("allow", ())),
            _cidrs(subnets.get("deny", ())),
            tuple(injections),
        )

    @property
    def any_domain(self) -> bool:
        """A `*` entry: every name is allowed (the open internet plus per-domain rules)."""
        return ANY_DOMAIN in self.domains

    @property
    def uses_proxy(self) -> bool:
        """Whether TCP from the session goes through the egress proxy."""
        if self.mode != "custom":
            return False
        return bool(self.injections) if self.any_domain else bool(self.domains)

    @property
    def answers_dns(self) -> bool:
        return self.mode != "deny-all"

    def allows_name(self, name: str) -> bool:
        if self.mode == "allow-all":
            return True
        return self.mode == "custom" and any(domain_matches(d, name) for d in self.domains)

    def injections_for(self, name: str) -> list[InjectionRule]:
        return [rule for rule in self.injections if domain_matches(rule.domain, name)]

    def denies_address(self, address: str) -> bool:
        ip = ipaddress.ip_address(address)
        return any(ip in ipaddress.ip_network(c) for c in self.deny_cidrs)
