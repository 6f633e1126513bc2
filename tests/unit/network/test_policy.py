"""How policies read: domain patterns, header rules, and the DNS server's answers."""

from __future__ import annotations

import dns.message
import dns.rcode
import pytest

from ember.network.dns_server import answer
from ember.network.policy import (
    NetworkPolicy,
    RequestInfo,
    domain_matches,
    inject_headers,
    is_blocked,
)
from ember.network.resolver import UpstreamResolver


@pytest.mark.parametrize(
    ("pattern", "name", "expected"),
    [
        ("api.example.com", "api.example.com", True),
        ("api.example.com", "API.Example.com.", True),
        ("api.example.com", "x.api.example.com", False),
        ("*.good.test", "a.good.test", True),
        ("*.good.test", "a.b.good.test", True),  # a leading * covers any depth
        ("*.good.test", "good.test", False),
        ("*.good.test", "agood.test", False),
        ("www.*.test", "www.x.test", True),
        ("www.*.test", "www.x.y.test", False),  # elsewhere * is one label
        ("*", "anything.at.all", True),
    ],
)
def test_domain_patterns(pattern: str, name: str, expected: bool) -> None:
    assert domain_matches(pattern, name) is expected


def test_a_policy_reads_the_wire_forms() -> None:
    assert NetworkPolicy.from_stored(None).mode == "allow-all"
    listed = NetworkPolicy.from_stored(
        {"mode": "custom", "allow": ["A.test"], "subnets": {"deny": ["198.18.0.1"]}}
    )
    assert listed.domains == ("a.test",) and listed.deny_cidrs == ("198.18.0.1/32",)
    assert listed.uses_proxy and not listed.any_domain
    assert listed.allows_name("a.test") and not listed.allows_name("b.test")
    assert listed.denies_address("198.18.0.1") and not listed.denies_address("198.18.0.2")
    cidrs_only = NetworkPolicy.from_stored({"mode": "custom", "subnets": {"allow": ["1.2.3.0/24"]}})
    assert not cidrs_only.uses_proxy  # nothing for the proxy to decide
    open_with_rules = NetworkPolicy.from_stored(
        {"mode": "custom", "allow": {"*": [], "k.test": [{"transform": [{"headers": {"a": "1"}}]}]}}
    )
    assert open_with_rules.any_domain and open_with_rules.uses_proxy
    assert [r.domain for r in open_with_rules.injections_for("k.test")] == ["k.test"]
    assert open_with_rules.injections_for("other.test") == []
    assert NetworkPolicy.from_stored({"mode": "deny-all"}).answers_dns is False


def _request(method: str = "GET", target: str = "/", **headers: str) -> RequestInfo:
    return RequestInfo(method, target, tuple(headers.items()))


def test_header_rules_replace_same_named_headers_when_their_match_holds() -> None:
    policy = NetworkPolicy.from_stored(
        {
            "mode": "custom",
            "allow": {
                "api.test": [
                    {
                        "match": {
                            "path": {"startsWith": "/v1/"},
                            "method": ["post", "GET"],
                            "queryString": [
                                {"key": {"exact": "q"}, "value": {"regex": "^[0-9]+$"}}
                            ],
                            "headers": [{"key": {"exact": "X-Mode"}, "value": {"exact": "live"}}],
                        },
                        "transform": [{"headers": {"Authorization": "Bearer real"}}],
                    }
                ]
            },
        }
    )
    rules = policy.injections_for("api.test")
    matching = _request("GET", "/v1/items?q=42", authorization="Bearer fake", **{"x-mode": "live"})
    assert inject_headers(rules, matching) == [("x-mode", "live"), ("Authorization", "Bearer real")]
    for miss in (
        _request("GET", "/v2/items?q=42", **{"x-mode": "live"}),  # path
        _request("DELETE", "/v1/items?q=42", **{"x-mode": "live"}),  # method
        _request("GET", "/v1/items?q=abc", **{"x-mode": "live"}),  # query value
        _request("GET", "/v1/items?q=42", **{"x-mode": "test"}),  # header value
    ):
        assert inject_headers(rules, miss) is None


def test_addresses_no_session_may_reach() -> None:
    for address in ("10.1.2.3", "127.0.0.1", "169.254.169.254", "192.168.1.1", "::1"):
        assert is_blocked(address)
    assert is_blocked("203.0.113.7", host_addresses=("203.0.113.7",))
    assert not is_blocked("198.18.0.1")


def test_the_dns_server_answers_only_allowed_names_without_asking_upstream() -> None:
    # No nameserver answers at this address: a question that reached it would fail.
    resolver = UpstreamResolver(["192.0.2.1"])
    policies = {
        "10.213.0.2": NetworkPolicy.from_stored({"mode": "custom", "allow": ["ok.test"]}),
        "10.213.0.6": NetworkPolicy.from_stored({"mode": "deny-all"}),
    }

    def ask(source: str, name: str, rdtype: str = "A") -> dns.message.Message:
        query = dns.message.make_query(name, rdtype)
        reply = answer(query.to_wire(), source, policies.get, resolver, tcp=False)
        assert reply is not None
        return dns.message.from_wire(reply)

    assert ask("10.213.0.2", "other.test").rcode() == dns.rcode.NXDOMAIN
    allowed_v6 = ask("10.213.0.2", "ok.test", "AAAA")  # sessions have IPv4 only
    assert allowed_v6.rcode() == dns.rcode.NOERROR and not allowed_v6.answer
    assert ask("10.213.0.6", "ok.test").rcode() == dns.rcode.REFUSED
    assert ask("10.213.9.9", "ok.test").rcode() == dns.rcode.REFUSED  # no such session
    assert answer(b"\x00garbage", "10.213.0.2", policies.get, resolver, tcp=False) is None
