"""Interactive terminals: a command on a pseudo-terminal, relayed over one connection.

Frames from the host: `D` keystrokes, `J {"resize": [cols, rows]}`, `E` to
hang up. Frames to the host: `1` terminal output, then `J {"exit_code"}`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import struct
import threading

from . import protocol
from .commands import CommandTable, User

TYPE_CHECKING = False  # like typing.TYPE_CHECKING, without importing typing (3 ms)

if TYPE_CHECKING:
    from collections.abc import Mapping

    from .server import Connection


def _set_size(fd: int, cols: int, rows: int) -> None:
    import fcntl
    import termios

    fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _size(value: object, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= 10_000:
        raise protocol.AgentError(
            protocol.BAD_REQUEST, f"{name} must be an integer from 1 to 10000"
        )
    return value


def run_terminal(
    conn: Connection,
    commands: CommandTable,
    argv: list[str],
    *,
    cwd: str,
    env: Mapping[str, str],
    user: User,
    cols: int,
    rows: int,
) -> None:
    cols, rows = _size(cols, "cols"), _size(rows, "rows")
    master, slave = os.openpty()
    try:
        _set_size(slave, cols, rows)
        # `setsid --ctty` (util-linux) makes the terminal the controlling one
        # after the fork, in a single-threaded process, which a fork from
        # this multi-threaded agent could not safely do itself.
        command = commands.spawn_with_fds(
            ["setsid", "--ctty", "--", *argv],
            cwd=cwd,
            env=env,
            user=user,
            fds=(slave, slave, slave),
            new_session=False,
        )
    finally:
        os.close(slave)
    if command.done:
        os.close(master)
        why = b"".join(data for _, data in command.chunks).decode(errors="replace").strip()
        raise protocol.AgentError(
            protocol.BAD_REQUEST, why or "the terminal's command did not start"
        )
    conn.send_json({"ok": True, "pid": command.pid})

    def relay_output() -> None:
        try:
            while True:
                try:
                    data = os.read(master, protocol.CHUNK_BYTES)
                except OSError:  # EIO: every holder of the terminal is gone
                    break
                if not data:
                    break
                conn.send(protocol.encode_frame(protocol.STDOUT, data))
            commands.wait_for(command)
            conn.send_json({"exit_code": command.exit_code})
        except OSError:
            pass  # the host went away
        finally:
            with contextlib.suppress(OSError):
                conn.sock.shutdown(2)  # ends the input loop below

    output = threading.Thread(target=relay_output, name="terminal", daemon=True)
    output.start()
    try:
        while True:
            kind, payload = conn.read_frame()
            if kind == protocol.DATA:
                view = memoryview(payload)
                while view:
                    view = view[os.write(master, view) :]
            elif kind == protocol.JSON:
                message = protocol.decode_json(payload)
                size = message.get("resize")
                if isinstance(size, list) and len(size) == 2:
                    _set_size(master, _size(size[0], "cols"), _size(size[1], "rows"))
            elif kind == protocol.END:
                break
    except (protocol.ProtocolError, OSError):
        pass
    finally:
        commands.signal_command(command, signal.SIGHUP)  # the host hung up
        output.join()
        os.close(master)
