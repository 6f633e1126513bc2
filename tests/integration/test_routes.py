"""Exposed ports through emberd: HTTP and WebSockets by Host, and clear errors otherwise."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import websockets

from ..conftest import Emberd
from .test_api_lifecycle import create, run, write_file

pytestmark = pytest.mark.integration

# A WebSocket echo server with the standard library only (the image has no
# websockets package): the handshake, then text frames echoed upper-cased.
ECHO_SERVER = r"""
import base64, hashlib, socket, struct
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
server = socket.create_server(("0.0.0.0", 8001))
while True:
    conn, _ = server.accept()
    request = conn.recv(4096).decode()
    lines = request.split("\r\n")
    key = next(l.split(":", 1)[1].strip() for l in lines if l.lower().startswith("sec-websocket-k"))
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    conn.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\n"
                  f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
    while True:
        head = conn.recv(2)
        if len(head) < 2 or head[0] & 0x0F == 8:
            break
        length = head[1] & 0x7F
        if length == 126:
            length = struct.unpack(">H", conn.recv(2))[0]
        mask = conn.recv(4)
        data = bytearray(conn.recv(length))
        text = bytes(b ^ mask[i % 4] for i, b in enumerate(data)).decode().upper().encode()
        conn.sendall(bytes([0x81, len(text)]) + text)
    conn.close()
"""


@pytest.fixture
def api(emberd_net: Emberd) -> Iterator[httpx.Client]:
    with emberd_net.client() as client:
        yield client


def route_of(created: dict, port: int) -> dict:
    return next(r for r in created["routes"] if r["port"] == port)


def get(emberd: Emberd, subdomain: str, path: str = "/") -> httpx.Response:
    return httpx.get(f"{emberd.url}{path}", headers={"host": f"{subdomain}.localhost"}, timeout=10)


def wait_for(emberd: Emberd, subdomain: str) -> httpx.Response:
    for _ in range(100):
        response = get(emberd, subdomain)
        if response.status_code == 200:
            return response
        time.sleep(0.1)
    return response


def test_http_through_a_route(emberd_net: Emberd, api: httpx.Client) -> None:
    created = create(api, ports=[8000])
    sid = created["session"]["id"]
    write_file(api, sid, "vercel/sandbox/site/index.html", b"<h1>hello from the sandbox</h1>")
    api.post(
        f"/v2/sandboxes/sessions/{sid}/cmd",
        json={"command": "python3", "args": ["-m", "http.server", "8000", "-d", "site"]},
    )
    route = route_of(created, 8000)
    answer = wait_for(emberd_net, route["subdomain"])
    assert answer.status_code == 200 and answer.text == "<h1>hello from the sandbox</h1>"
    missing = get(emberd_net, route["subdomain"], "/nope.html")
    assert missing.status_code == 404  # the sandbox's own answer, passed through

    # Ports not exposed, and names that are not routes, are not routed.
    assert get(emberd_net, route["subdomain"].replace("-8000", "-9000")).status_code == 404
    unknown = get(emberd_net, "sb-" + "0" * 24 + "-8000")
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "not_found"

    # The traffic shows in the session's usage, and in its sandbox's after the stop.
    transfer = api.get(f"/v2/sandboxes/sessions/{sid}").json()["session"]["networkTransfer"]
    assert transfer["ingress"] > 0 and transfer["egress"] > len("<h1>hello from the sandbox</h1>")

    # A stopped sandbox's route says so clearly.
    stop = api.post(f"/v2/sandboxes/sessions/{sid}/stop")
    assert stop.status_code == 200
    assert stop.json()["sandbox"]["totalEgressBytes"] >= transfer["egress"]
    stopped = get(emberd_net, route["subdomain"])
    assert stopped.status_code == 410 and stopped.json()["error"]["code"] == "sandbox_stopped"


def test_websocket_through_a_route(emberd_net: Emberd, api: httpx.Client) -> None:
    created = create(api, ports=[8001])
    sid = created["session"]["id"]
    write_file(api, sid, "vercel/sandbox/echo.py", ECHO_SERVER.encode())
    api.post(f"/v2/sandboxes/sessions/{sid}/cmd", json={"command": "python3", "args": ["echo.py"]})
    subdomain = route_of(created, 8001)["subdomain"]

    async def talk() -> list[str]:
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", emberd_net.port))
            try:
                async with websockets.connect(f"ws://{subdomain}.localhost/", sock=sock) as ws:
                    replies = []
                    for word in ("ember", "sandbox"):
                        await ws.send(word)
                        replies.append(str(await ws.recv()))
                    return replies
            except (websockets.InvalidStatus, websockets.ConnectionClosed, OSError):
                await asyncio.sleep(0.1)
        raise AssertionError("the WebSocket route never answered")

    assert asyncio.run(talk()) == ["EMBER", "SANDBOX"]


def test_sessions_with_networks_reach_nothing_local(api: httpx.Client) -> None:
    sid = create(api)["session"]["id"]
    code, out, _ = run(api, sid, "ip", "-br", "addr", "show", "eth0")
    assert code == 0 and "10.213." in out
    code, out, _ = run(
        api,
        sid,
        "curl",
        "-s",
        "-m",
        "5",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "http://169.254.169.254/",
    )
    assert out == "000"
