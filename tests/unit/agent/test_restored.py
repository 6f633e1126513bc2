"""The `restored` operation refuses bad input before it touches the clock or the RNG.

(Only refusals are tested here: these tests run as root on the host, where a
valid request would set the host's clock, so even the refused ones carry the
current time. The microVM tests cover the rest.)
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from ember.agent import protocol
from ember.agent.commands import User
from ember.agent.server import Agent

NOW = time.time()


class _Conn:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    def send_json(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


@pytest.mark.parametrize(
    "request_",
    [
        {"time": NOW},  # no seed
        {"time": NOW, "seed": "zz" * 32},  # not hex
        {"time": NOW, "seed": "00" * 8},  # too short
        {"time": NOW, "seed": "00" * 600},  # too long
        {"time": "now", "seed": "00" * 32},
        {"time": True, "seed": "00" * 32},
        {"time": NOW, "seed": "00" * 32, "hostname": "a b"},
        {"time": NOW, "seed": "00" * 32, "hostname": "x\nevil"},
        {"time": NOW, "seed": "00" * 32, "hostname": "h" * 64},
    ],
)
def test_bad_requests_change_nothing(request_: dict[str, Any]) -> None:
    agent = Agent(User.lookup("root"), "/")
    conn = _Conn()
    with pytest.raises(protocol.AgentError) as raised:
        agent.op_restored(conn, request_)  # type: ignore[arg-type]
    assert raised.value.code == protocol.BAD_REQUEST
    assert conn.sent == []
