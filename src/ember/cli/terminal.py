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

from websockets.exceptions import ConnectionClosed, WebSocketException
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


def terminal_size() -> tuple[int, int]:
    """Columns and rows of the terminal we are on (COLUMNS, if exported, would go stale)."""
    for stream in (sys.stdout, sys.stdin):
        try:
            size = os.get_terminal_size(stream.fileno())
        except (OSError, ValueError):
            continue
        return size.columns, size.lines
    fallback = shutil.get_terminal_size()
    return fallback.columns, fallback.lines


def attach(
    url: str, token: str, argv: Sequence[str], *, cwd: str | None, env: dict[str, str]
) -> int:
    """Run `argv` (empty: the login shell) on a sandbox terminal; returns its exit code.

    Raises RuntimeError when the terminal cannot be opened or reports an error.
    """
    cols, rows = terminal_size()
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
    try:
        ws = connect(f"{url}?token={token}", max_size=None)
    except (OSError, WebSocketException) as exc:
        raise RuntimeError(f"cannot open the terminal at {url}: {exc}") from None
    with ws:
        ws.send(json.dumps(start))
        receiver = threading.Thread(target=_receive, args=(ws, result), daemon=True)
        receiver.start()
        _forward_input(ws, receiver)
        receiver.join(timeout=5)
    if "error" in result:
        raise RuntimeError(result["error"])
    return int(result.get("code", 1))


def _forward_input(ws: ClientConnection, receiver: threading.Thread) -> None:
    """Send keystrokes and window sizes until the command ends.

    SIGWINCH only wakes this loop through a pipe: sending from the handler itself could
    deadlock, the handler running while this thread holds the connection's send lock.
    """
    wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)

    def resized(_signum: int, _frame: object) -> None:
        with contextlib.suppress(BlockingIOError):
            os.write(wake_w, b"w")

    previous = signal.signal(signal.SIGWINCH, resized)
    stdin = sys.stdin.fileno()
    reading = True
    try:
        with raw_mode(stdin):
            while receiver.is_alive():
                ready, _, _ = select.select([wake_r, stdin] if reading else [wake_r], [], [], 0.1)
                if wake_r in ready:
                    with contextlib.suppress(BlockingIOError):
                        os.read(wake_r, 64)
                    c, r = terminal_size()
                    ws.send(json.dumps({"type": "resize", "cols": c, "rows": r}))
                if stdin in ready:
                    data = os.read(stdin, 4096)
                    if data:
                        ws.send(data)
                    else:  # our stdin ended: stop sending, wait for the command
                        reading = False
    except ConnectionClosed:
        pass
    finally:
        signal.signal(signal.SIGWINCH, previous)
        os.close(wake_r)
        os.close(wake_w)
