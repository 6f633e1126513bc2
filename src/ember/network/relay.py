"""Moving a connection's bytes both ways once the proxy has let it through.

Plain TCP is spliced in the kernel (splice(2) through a pipe), so bytes
never enter Python; each direction runs in its own thread, as the sockets
are blocking.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import threading

CHUNK = 1 << 20
F_SETPIPE_SZ = 1031


def _shut(sock: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(how)


def _splice(source: socket.socket, sink: socket.socket) -> bool:
    """Copy until end of stream; True when it ended cleanly."""
    read_end, write_end = os.pipe()
    try:
        with contextlib.suppress(OSError):
            fcntl.fcntl(write_end, F_SETPIPE_SZ, CHUNK)
        while True:
            moved = os.splice(source.fileno(), write_end, CHUNK)
            if moved == 0:
                return True
            while moved:
                moved -= os.splice(read_end, sink.fileno(), moved)
    except OSError:
        return False
    finally:
        os.close(read_end)
        os.close(write_end)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    if _splice(source, sink):
        _shut(sink, socket.SHUT_WR)  # pass the half-close on
    else:
        # A reset on one side ends both directions.
        _shut(source, socket.SHUT_RDWR)
        _shut(sink, socket.SHUT_RDWR)


def relay(a: socket.socket, b: socket.socket) -> None:
    """Until both directions end; the caller closes the sockets."""
    other = threading.Thread(target=_pump, args=(b, a), name="ember-relay", daemon=True)
    other.start()
    _pump(a, b)
    other.join()
