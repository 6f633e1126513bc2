"""Exposed ports: requests for `sb-<sandbox>-<port>.<domain>` go to that port of the sandbox.

An ASGI layer in front of the API: HTTP requests are forwarded with their
body and streamed back, WebSockets are bridged message by message. Any other
Host falls through to the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import AsyncIterator

import httpx
import websockets
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from ember.control import ControlPlane
from ember.wire import errors

from .errors import error_response

# Hop-by-hop headers (RFC 9110 §7.6.1) are the proxy's own, not forwarded.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
    }
)
_ROUTE = re.compile(r"sb-([a-z0-9]{24})-(\d{1,5})")


class PortRouter:
    def __init__(self, app: ASGIApp, plane: ControlPlane, domain: str) -> None:
        self.app = app
        self.plane = plane
        self.suffix = "." + domain.lower()
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(30.0, read=None), follow_redirects=False
        )

    def _route(self, scope: Scope) -> tuple[str, int] | None:
        if scope["type"] not in ("http", "websocket"):
            return None
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1").lower()
        host = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        if not host.endswith(self.suffix):
            return None
        match = _ROUTE.fullmatch(host[: -len(self.suffix)])
        return (match.group(1), int(match.group(2))) if match else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = self._route(scope)
        if route is None:
            await self.app(scope, receive, send)
            return
        try:
            target = await self.plane.route_target(*route)
        except errors.EmberError as exc:
            if scope["type"] == "websocket":
                await WebSocket(scope, receive, send).close(code=4404, reason=exc.message[:120])
            else:
                await error_response(exc)(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await self._websocket(scope, receive, send, target)
        else:
            response = await self._forward(Request(scope, receive), target)
            await response(scope, receive, send)

    async def _forward(self, request: Request, target: str) -> Response:
        headers = [(k, v) for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP]
        headers.append(("host", request.headers.get("host", "")))
        upstream = self.http.build_request(
            request.method,
            f"http://{target}{request.url.path}",
            params=request.url.query or None,
            headers=headers,
            content=request.stream(),
        )
        try:
            answer = await self.http.send(upstream, stream=True)
        except httpx.HTTPError as exc:
            return JSONResponse(
                {
                    "error": {
                        "code": "bad_gateway",
                        "message": f"the sandbox's port did not answer: {exc}",
                    }
                },
                status_code=502,
            )

        async def body() -> AsyncIterator[bytes]:
            try:
                async for chunk in answer.aiter_raw():
                    yield chunk
            finally:
                await answer.aclose()

        kept = {k: v for k, v in answer.headers.items() if k.lower() not in HOP_BY_HOP}
        return StreamingResponse(body(), status_code=answer.status_code, headers=kept)

    async def _websocket(self, scope: Scope, receive: Receive, send: Send, target: str) -> None:
        client = WebSocket(scope, receive, send)
        query = scope.get("query_string", b"").decode()
        url = f"ws://{target}{scope['path']}" + (f"?{query}" if query else "")
        try:
            upstream = await websockets.connect(url, max_size=None)
        except (OSError, websockets.WebSocketException) as exc:
            await client.close(code=1014, reason=f"the sandbox's port did not answer: {exc}"[:120])
            return
        await client.accept()

        async def to_sandbox() -> None:
            with contextlib.suppress(WebSocketDisconnect, websockets.ConnectionClosed):
                while True:
                    message = await client.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    await upstream.send(
                        message["bytes"]
                        if message.get("bytes") is not None
                        else message.get("text", "")
                    )
            await upstream.close()

        async def to_client() -> None:
            with contextlib.suppress(websockets.ConnectionClosed, RuntimeError):
                async for message in upstream:
                    if isinstance(message, bytes):
                        await client.send_bytes(message)
                    else:
                        await client.send_text(message)
            with contextlib.suppress(RuntimeError):
                await client.close()

        tasks = [asyncio.create_task(to_sandbox()), asyncio.create_task(to_client())]
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await upstream.close()
