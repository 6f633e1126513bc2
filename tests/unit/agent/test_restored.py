"""The `restored` operation's request: refused unless well formed.

(The parsing is tested on its own: a real `Agent` in the test process would
start its reaper, which collects every child of that process; and a valid
request would set the host's clock. The microVM tests cover the operation.)
"""

from __future__ import annotations

import struct
from typing import Any

import pytest

from ember.agent import protocol
from ember.agent.guestnet import RTENTRY, parse_network
from ember.agent.server import parse_restored

SEED = "00" * 32


@pytest.mark.parametrize(
    "request_",
    [
        {"time": 1.0},  # no seed
        {"time": 1.0, "seed": "zz" * 32},  # not hex
        {"time": 1.0, "seed": "00" * 8},  # too short
        {"time": 1.0, "seed": "00" * 600},  # too long
        {"time": "now", "seed": SEED},
        {"time": True, "seed": SEED},
        {"time": 1.0, "seed": SEED, "hostname": "a b"},
        {"time": 1.0, "seed": SEED, "hostname": "x\nevil"},
        {"time": 1.0, "seed": SEED, "hostname": "h" * 64},
    ],
)
def test_bad_requests_are_refused(request_: dict[str, Any]) -> None:
    with pytest.raises(protocol.AgentError) as raised:
        parse_restored(request_)
    assert raised.value.code == protocol.BAD_REQUEST


def test_a_good_request() -> None:
    request = {"time": 1700000000, "seed": SEED, "hostname": "sb-1"}
    assert parse_restored(request) == (1700000000.0, bytes(32), "sb-1")
    assert parse_restored({"time": 2.5, "seed": SEED})[2] is None


@pytest.mark.parametrize(
    "network",
    [
        "10.0.0.2/30",
        {"address": "10.0.0.2", "prefix": 30},  # no gateway
        {"address": "10.0.0.300", "prefix": 30, "gateway": "10.0.0.1"},
        {"address": "::1", "prefix": 30, "gateway": "10.0.0.1"},
        {"address": "10.0.0.2", "prefix": 33, "gateway": "10.0.0.1"},
        {"address": "10.0.0.2", "prefix": True, "gateway": "10.0.0.1"},
        {"address": "10.0.0.2; reboot", "prefix": 30, "gateway": "10.0.0.1"},
    ],
)
def test_bad_networks_are_refused(network: object) -> None:
    with pytest.raises(protocol.AgentError) as raised:
        parse_network(network)
    assert raised.value.code == protocol.BAD_REQUEST


def test_a_good_network_and_the_route_layout() -> None:
    good = {"address": "10.0.0.2", "prefix": 30, "gateway": "10.0.0.1"}
    assert parse_network(good) == ("10.0.0.2", 30, "10.0.0.1")
    assert parse_network(None) is None
    assert struct.calcsize(RTENTRY) == 120  # sizeof(struct rtentry) on 64-bit Linux
