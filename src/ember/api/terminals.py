"""Interactive terminals (reference §9.4): a ticket over HTTP, then a WebSocket.

The client sends `{"type": "start", command, args, env, cwd, cols, rows}`
as text, then keystrokes as binary frames and `{"type": "resize", cols,
rows}` as text; the server sends terminal output as binary frames and
`{"type": "exit", "code"}` as text before closing.
"""

from __future__ import annotations

import asyncio
import contextlib
import json

from fastapi import APIRouter, Request, WebSocket, WebSocketDisconnect

from ember.control import SessionUnavailableError, Terminal
from ember.wire import errors

from .deps import Caller, Plane

router = APIRouter()
SESSION = "/v2/sandboxes/sessions/{session_id}"


@router.post(SESSION + "/interactive")
async def interactive(
    session_id: str, request: Request, control: Plane, caller: Caller
) -> dict[str, str]:
    token = await control.terminals.ticket(caller, session_id)
    scheme = "wss" if request.url.scheme == "https" else "ws"
    url = f"{scheme}://{request.url.netloc}/v2/sandboxes/sessions/{session_id}/pty"
    return {"url": url, "token": token}


@router.websocket(SESSION + "/pty")
async def terminal_socket(websocket: WebSocket, session_id: str) -> None:
    control = websocket.app.state.plane
    try:
        ticket = control.terminals.redeem(websocket.query_params.get("token", ""), session_id)
    except errors.EmberError as exc:
        await websocket.close(code=4401, reason=exc.message[:120])
        return
    await websocket.accept()
    try:
        start = json.loads(await websocket.receive_text())
        if not isinstance(start, dict) or start.get("type") != "start":
            raise errors.BadRequestError('the first message must be {"type": "start", ...}')
        terminal = await control.terminals.attach(ticket, start)
    except (errors.EmberError, ValueError, WebSocketDisconnect) as exc:
        message = exc.message if isinstance(exc, errors.EmberError) else str(exc)
        with contextlib.suppress(Exception):
            await websocket.send_text(json.dumps({"type": "error", "message": message}))
            await websocket.close(code=4400)
        return
    try:
        await _bridge(websocket, terminal)
    finally:
        await terminal.close()


async def _bridge(websocket: WebSocket, terminal: Terminal) -> None:
    async def keystrokes() -> None:
        try:
            while True:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                if message.get("bytes"):
                    await terminal.write(message["bytes"])
                elif message.get("text"):
                    control = json.loads(message["text"])
                    if control.get("type") == "resize":
                        await terminal.resize(int(control["cols"]), int(control["rows"]))
        except (
            WebSocketDisconnect,
            ValueError,
            KeyError,
            TypeError,
            SessionUnavailableError,
            OSError,
        ):
            pass
        await terminal.hang_up()

    reader = asyncio.create_task(keystrokes())
    try:
        async for data in terminal.output():
            await websocket.send_bytes(data)
        await websocket.send_text(json.dumps({"type": "exit", "code": terminal.exit_code}))
        await websocket.close()
    except (SessionUnavailableError, WebSocketDisconnect, RuntimeError, OSError):
        pass
    finally:
        reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reader
