"""Attach this terminal to a sandbox terminal over the WebSocket protocol (reference §9.4)."""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import sys
import termios
import threading
import tty
from collections.abc import Iterator, Sequence
from typing import Any

from websockets.exceptions import ConnectionClosed
from websockets.sync.client import ClientConnection, connect

DEFAULT_TERM = "xterm-256color"


@contextlib.contextmanager
def raw_mode(fd: int) -> Iterator[None]:
    """Keystrokes go to the sandbox as they are typed (when stdin is a terminal)."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def _receive(ws: ClientConnection, result: dict[str, Any]) -> None:
    out = sys.stdout.buffer
    try:
        for message in ws:
            if isinstance(message, bytes):
                out.write(message)
                out.flush()
            else:
                event = json.loads(message)
                if event.get("type") == "exit":
                    result["code"] = int(event.get("code", 0))
                elif event.get("type") == "error":
                    result["error"] = str(event.get("message"))
    except ConnectionClosed:
        pass


def attach(
    url: str, token: str, argv: Sequence[str], *, cwd: str | None, env: dict[str, str]
) -> int:
    """Run `argv` (empty: the login shell) on a sandbox terminal; returns its exit code."""
    cols, rows = shutil.get_terminal_size()
    start = {
        "type": "start",
        "command": argv[0] if argv else "",
        "args": list(argv[1:]),
        "env": [
            f"TERM={os.environ.get('TERM', DEFAULT_TERM)}",
            *(f"{k}={v}" for k, v in env.items()),
        ],
        "cwd": cwd,
        "cols": cols,
        "rows": rows,
    }
    result: dict[str, Any] = {}
    with connect(f"{url}?token={token}", max_size=None) as ws:
        ws.send(json.dumps(start))
        receiver = threading.Thread(target=_receive, args=(ws, result), daemon=True)
        receiver.start()

        def resized(_signum: int, _frame: object) -> None:
            c, r = shutil.get_terminal_size()
            with contextlib.suppress(ConnectionClosed):
                ws.send(json.dumps({"type": "resize", "cols": c, "rows": r}))

        previous = signal.signal(signal.SIGWINCH, resized)
        stdin = sys.stdin.fileno()
        try:
            with raw_mode(stdin):
                while receiver.is_alive():
                    ready, _, _ = select.select([stdin], [], [], 0.1)
                    if not ready:
                        continue
                    data = os.read(stdin, 4096)
                    if not data:  # our stdin ended: stop sending, wait for the command
                        receiver.join()
                        break
                    ws.send(data)
        except ConnectionClosed:
            pass
        finally:
            signal.signal(signal.SIGWINCH, previous)
        receiver.join(timeout=5)
    if "error" in result:
        raise RuntimeError(result["error"])
    return int(result.get("code", 1))
