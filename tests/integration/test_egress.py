"""Egress policies end to end: a networked emberd, sandboxes, and the fake
internet of ember.testing.netlab (DNS for *.test names, HTTP and HTTPS echoes).

The echo servers answer with what they received (the address they were
reached on, Host, headers), so a test sees what left the sandbox.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ember.testing.netlab import SPOOF_IP, UPSTREAM_IP, Upstream

from ..conftest import Emberd
from .test_api_lifecycle import create, run, write_file

pytestmark = pytest.mark.integration
UPSTREAM_CA = "/tmp/upstream-ca.pem"  # inside the sandbox
SECRET = "Bearer s3cret-value"


@pytest.fixture
def api(emberd_net: Emberd) -> Iterator[httpx.Client]:
    with emberd_net.client() as client:
        yield client


@pytest.fixture(params=["container", "microvm"])
def isolation(request: pytest.FixtureRequest) -> str:
    """Policies hold the same on both runtimes (a microVM's tap is bridged into
    the same session namespace, firewall, DNS server and proxy)."""
    return str(request.param)


def sandbox(api: httpx.Client, upstream: Upstream, policy: Any, isolation: str) -> str:
    """A running sandbox with `policy`, holding the upstream's CA at UPSTREAM_CA."""
    sid = create(api, networkPolicy=policy, runtime=isolation)["session"]["id"]
    write_file(api, sid, UPSTREAM_CA.lstrip("/"), upstream.ca_path.read_bytes())
    return sid


def curl(api: httpx.Client, sid: str, url: str, *extra: str) -> tuple[str, str]:
    """(HTTP status, body) of a request from inside the sandbox; status 000: no connection."""
    _, out, _ = run(
        api,
        sid,
        "curl",
        "-s",
        "-m",
        "5",
        "--cacert",
        UPSTREAM_CA,
        "-w",
        "\n%{http_code}",
        *extra,
        url,
    )
    body, _, status = out.rpartition("\n")
    return status, body


def echo(api: httpx.Client, sid: str, url: str, *extra: str) -> dict[str, Any]:
    status, body = curl(api, sid, url, *extra)
    assert status == "200", (status, body)
    return json.loads(body)


def set_policy(api: httpx.Client, sid: str, policy: Any) -> dict[str, Any]:
    response = api.post(f"/v2/sandboxes/sessions/{sid}/network-policy", json=policy)
    assert response.status_code == 200, response.text
    return response.json()


LOOKUP = (
    "import socket, sys, time\n"
    "started = time.monotonic()\n"
    "try:\n"
    "    print(socket.gethostbyname(sys.argv[1]), end=' ')\n"
    "except OSError as exc:\n"
    "    print('failed', end=' ')\n"
    "print(round(time.monotonic() - started, 2))\n"
)


def lookup(api: httpx.Client, sid: str, name: str) -> tuple[str, float]:
    """(address or "failed", seconds the lookup took), from inside the sandbox."""
    _, out, _ = run(api, sid, "python3", "-c", LOOKUP, name)
    address, seconds = out.split()
    return address, float(seconds)


def test_allow_all_resolves_names_and_reaches_the_upstream(
    api: httpx.Client, upstream: Upstream, isolation: str
) -> None:
    sid = sandbox(api, upstream, {"mode": "allow-all"}, isolation)
    assert lookup(api, sid, "api.example.test")[0] == UPSTREAM_IP
    assert lookup(api, sid, "nothing.test")[0] == "failed"
    assert echo(api, sid, "http://api.example.test/")["server"] == UPSTREAM_IP
    assert echo(api, sid, "https://bad.test/")["host"] == "bad.test"
    assert echo(api, sid, f"http://{SPOOF_IP}/")["server"] == SPOOF_IP  # raw IPs too


def test_deny_all_reaches_nothing_and_lookups_fail_at_once(
    api: httpx.Client, upstream: Upstream, isolation: str
) -> None:
    sid = sandbox(api, upstream, {"mode": "deny-all"}, isolation)
    address, seconds = lookup(api, sid, "api.example.test")
    assert address == "failed" and seconds < 1.0
    started = time.monotonic()
    assert curl(api, sid, f"http://{UPSTREAM_IP}/")[0] == "000"
    assert curl(api, sid, "https://api.example.test/")[0] == "000"
    assert time.monotonic() - started < 8  # refused, not timed out


def test_a_domain_allow_list_admits_its_names_only(
    api: httpx.Client, upstream: Upstream, isolation: str
) -> None:
    sid = sandbox(api, upstream, {"allow": ["api.example.test", "*.good.test"]}, isolation)
    # Allowed names, over TLS (by SNI) and plain HTTP (by Host); untouched TLS.
    assert echo(api, sid, "https://api.example.test/")["host"] == "api.example.test"
    assert echo(api, sid, "http://a.good.test/x")["path"] == "/x"
    assert echo(api, sid, "https://deep.a.good.test/")["host"] == "deep.a.good.test"
    # Other names do not resolve, and dialling them anyway is refused.
    assert lookup(api, sid, "bad.test")[0] == "failed"
    assert lookup(api, sid, "good.test")[0] == "failed"  # `*.` needs a label
    pinned = ("--resolve", f"bad.test:443:{UPSTREAM_IP}", "--resolve", f"bad.test:80:{UPSTREAM_IP}")
    assert curl(api, sid, "https://bad.test/", *pinned)[0] == "000"
    status, body = curl(api, sid, "http://bad.test/", *pinned)
    assert status == "403" and "bad.test is not allowed" in body
    # Raw IPs carry no allowed name.
    assert curl(api, sid, f"http://{UPSTREAM_IP}/")[0] == "403"
    assert curl(api, sid, f"https://{UPSTREAM_IP}/", "-k")[0] == "000"
    # An allowed name pointed at another address by the sandbox's own
    # /etc/hosts (its to edit) is refused.
    code, _, err = run(
        api, sid, "sh", "-c", f"echo '{SPOOF_IP} api.example.test' >> /etc/hosts", sudo=True
    )
    assert code == 0, err
    assert lookup(api, sid, "api.example.test")[0] == SPOOF_IP
    assert curl(api, sid, "https://api.example.test/")[0] == "000"
    status, body = curl(api, sid, "http://api.example.test/")
    assert status == "403" and f"does not resolve to {SPOOF_IP}" in body


def test_cidr_rules_beside_domains_and_deny_wins(
    api: httpx.Client, upstream: Upstream, isolation: str
) -> None:
    sid = sandbox(
        api,
        upstream,
        {"allow": ["api.example.test"], "subnets": {"allow": [f"{SPOOF_IP}/32"]}},
        isolation,
    )
    assert echo(api, sid, f"http://{SPOOF_IP}/")["server"] == SPOOF_IP  # no name needed
    assert echo(api, sid, "http://api.example.test/")["server"] == UPSTREAM_IP
    set_policy(
        api,
        sid,
        {"allow": ["api.example.test"], "subnets": {"deny": [f"{UPSTREAM_IP}/32"]}},
    )
    assert curl(api, sid, "http://api.example.test/")[0] == "000"  # denied beats allowed
    assert curl(api, sid, f"http://{SPOOF_IP}/")[0] == "403"  # no longer allowed


def test_a_live_policy_change_applies_to_the_next_connection(
    api: httpx.Client, upstream: Upstream, isolation: str
) -> None:
    sid = sandbox(api, upstream, {"mode": "allow-all"}, isolation)
    assert echo(api, sid, "https://bad.test/")["host"] == "bad.test"
    set_policy(api, sid, {"mode": "deny-all"})
    assert curl(api, sid, "https://bad.test/")[0] == "000"
    assert lookup(api, sid, "api.example.test")[0] == "failed"
    shown = set_policy(api, sid, {"allow": ["api.example.test"]})
    assert shown["session"]["networkPolicy"]["allowedDomains"] == ["api.example.test"]
    assert echo(api, sid, "https://api.example.test/")["host"] == "api.example.test"
    assert lookup(api, sid, "bad.test")[0] == "failed"


def test_injected_headers_reach_the_upstream_and_never_the_sandbox(
    api: httpx.Client, upstream: Upstream, isolation: str
) -> None:
    policy = {
        "allow": {
            "secret.test": [
                {
                    "match": {"path": {"startsWith": "/v1/"}},
                    "transform": [{"headers": {"Authorization": SECRET, "x-team": "blue"}}],
                }
            ],
            "api.example.test": [],
        }
    }
    created = create(api, networkPolicy=policy, runtime=isolation)
    sid = created["session"]["id"]
    write_file(api, sid, UPSTREAM_CA.lstrip("/"), upstream.ca_path.read_bytes())
    # The sandbox trusts Ember's CA through the system store (no --cacert here).
    _, out, err = run(
        api,
        sid,
        "curl",
        "-s",
        "-m",
        "5",
        "-H",
        "Authorization: Bearer mine",
        "https://secret.test/v1/items?q=1",
    )
    seen = json.loads(out)
    assert seen["headers"]["authorization"] == SECRET  # replaced, not added beside
    assert seen["headers"]["x-team"] == "blue"
    assert seen["path"] == "/v1/items?q=1"
    # Outside the rule's match: no injection.
    _, out, _ = run(api, sid, "curl", "-s", "-m", "5", "https://secret.test/health")
    assert "x-team" not in json.loads(out)["headers"]
    # Python and Node trust the CA too (SSL_CERT_FILE / NODE_EXTRA_CA_CERTS).
    _, out, err = run(
        api,
        sid,
        "python3",
        "-c",
        "import json, urllib.request;"
        "print(json.load(urllib.request.urlopen('https://secret.test/v1/py'))['headers']['x-team'])",
    )
    assert out.strip() == "blue", err
    _, out, err = run(
        api,
        sid,
        "node",
        "-e",
        "fetch('https://secret.test/v1/js').then(r => r.json())"
        ".then(j => console.log(j.headers['x-team']))",
    )
    assert out.strip() == "blue", err
    # A domain without header rules is not intercepted: the upstream's own
    # certificate still verifies against its CA.
    assert echo(api, sid, "https://api.example.test/")["host"] == "api.example.test"
    # The secret is nowhere the sandbox or the API can show.
    _, env, _ = run(api, sid, "env")
    assert "s3cret" not in env
    for response in (
        api.get(f"/v2/sandboxes/sessions/{sid}"),
        api.get(f"/v2/sandboxes/{created['sandbox']['name']}"),
    ):
        assert "s3cret" not in response.text
    rules = created["sandbox"]["networkPolicy"]["injectionRules"]
    assert rules[0]["domain"] == "secret.test"
    assert sorted(rules[0]["headerNames"]) == ["Authorization", "x-team"]


def test_sessions_reach_neither_emberd_nor_the_host_nor_metadata(
    emberd_net: Emberd, api: httpx.Client, upstream: Upstream, isolation: str
) -> None:
    sid = sandbox(api, upstream, {"mode": "allow-all"}, isolation)
    _, gateway, _ = run(api, sid, "sh", "-c", "ip route | awk '/default/ {print $3}'")
    gateway = gateway.strip()
    for url in (
        f"http://{gateway}:{emberd_net.port}/healthz",  # emberd, via the gateway
        "http://169.254.169.254/latest/meta-data/",
        f"http://{upstream_host_side()}:{emberd_net.port}/healthz",  # another host address
    ):
        assert curl(api, sid, url)[0] == "000", url


def upstream_host_side() -> str:
    from ember.testing.netlab import UPSTREAM_NET

    return f"{UPSTREAM_NET}.2"


def test_byte_counters_move(api: httpx.Client, upstream: Upstream, isolation: str) -> None:
    sid = sandbox(api, upstream, {"mode": "allow-all"}, isolation)
    before = api.get(f"/v2/sandboxes/sessions/{sid}").json()["session"]["networkTransfer"]
    run(api, sid, "curl", "-s", "-m", "5", "-d", "x" * 100_000, "http://api.example.test/")
    after = api.get(f"/v2/sandboxes/sessions/{sid}").json()["session"]["networkTransfer"]
    assert after["egress"] >= before["egress"] + 100_000
    assert after["ingress"] > before["ingress"]
