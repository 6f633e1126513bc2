"""Many agent connections over one byte stream (a microVM's virtio-serial port).

A container's agent accepts Unix-socket connections; a microVM has one
serial port to the host instead. Both ends of the port multiplex
connections ("channels") over it with frames:

    channel u32 | kind u8 | length u32 | payload (length bytes, ≤ MAX_PAYLOAD)

kinds: OPEN (the host opened a channel), DATA, CLOSE (that side finished
writing), RESET (the host end restarted: every channel is gone). The guest
side (`serve_port`) hands the agent one end of a socket pair per channel,
through an object that `accept()`s like a listening socket: there is no
address a process in the guest could dial to reach the agent. Written here,
with the standard library only, because the agent runs inside sessions.
"""

from __future__ import annotations

import _queue
import contextlib
import os
import socket
import struct
import threading
import time

HEADER = struct.Struct("!IBI")
MAX_PAYLOAD = 64 * 1024
OPEN, DATA, CLOSE, RESET = 1, 2, 3, 4
HOST_GONE_POLL_S = 0.05


def encode(channel: int, kind: int, payload: bytes = b"") -> bytes:
    return HEADER.pack(channel, kind, len(payload)) + payload


def _read_exactly(fd: int, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


class ChannelListener:
    """What the agent accepts channels from, as from a listening socket."""

    def __init__(self) -> None:
        self._pending: _queue.SimpleQueue[socket.socket] = _queue.SimpleQueue()

    def put(self, conn: socket.socket) -> None:
        self._pending.put(conn)

    def accept(self) -> tuple[socket.socket, str]:
        return self._pending.get(), ""


class PortMux:
    """The guest end: frames from the port fd to socket pairs for the agent."""

    def __init__(self, port_fd: int, listener: ChannelListener) -> None:
        self.port_fd = port_fd
        self.listener = listener
        self.channels: dict[int, socket.socket] = {}
        self.write_lock = threading.Lock()
        self.lock = threading.Lock()

    def send(self, channel: int, kind: int, payload: bytes = b"") -> None:
        frame = encode(channel, kind, payload)
        with self.write_lock:
            view = memoryview(frame)
            while view:
                view = view[os.write(self.port_fd, view) :]

    def _pump_to_host(self, channel: int, conn: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := conn.recv(MAX_PAYLOAD):
                self.send(channel, DATA, data)
        with contextlib.suppress(OSError):
            self.send(channel, CLOSE)

    def _open(self, channel: int) -> None:
        conn, agent_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        with self.lock:
            self.channels[channel] = conn
        self.listener.put(agent_end)
        threading.Thread(target=self._pump_to_host, args=(channel, conn), daemon=True).start()

    def _drop(self, channel: int | None = None) -> None:
        with self.lock:
            doomed = list(self.channels) if channel is None else [channel]
            conns = [self.channels.pop(c) for c in doomed if c in self.channels]
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            conn.close()

    def serve(self) -> None:
        """Forever; frames with an unknown kind are ignored.

        While nothing is connected at the host end (emberd restarting) reads
        see end-of-file: every channel is dropped and the port polled again.
        """
        while True:
            try:
                header = _read_exactly(self.port_fd, HEADER.size)
                channel, kind, length = HEADER.unpack(header) if header else (0, RESET, 0)
                payload = _read_exactly(self.port_fd, length) if length else b""
            except OSError:
                self._drop()
                return  # the port itself is gone
            if header is None or payload is None or length > MAX_PAYLOAD:
                self._drop()
                time.sleep(HOST_GONE_POLL_S)
                continue
            if kind == OPEN:
                self._open(channel)
            elif kind == DATA:
                conn = self.channels.get(channel)
                if conn is not None:
                    try:
                        conn.sendall(payload)
                    except OSError:
                        self._drop(channel)
            elif kind == CLOSE:
                conn = self.channels.get(channel)
                if conn is not None:
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_WR)
            elif kind == RESET:
                self._drop()


def serve_port(port_path: str) -> ChannelListener:
    """Start the guest end on the serial port at `port_path` (a daemon thread);
    the agent accepts the channels from what this returns."""
    fd = os.open(port_path, os.O_RDWR | os.O_CLOEXEC)
    listener = ChannelListener()
    mux = PortMux(fd, listener)
    threading.Thread(target=mux.serve, name="ember-channels", daemon=True).start()
    return listener
