"""The host end of a microVM's agent channels (framing in `ember.agent.channels`).

It listens on the session's `agent.sock`, as a container's agent does, and
carries each connection made there as a channel over QEMU's socket for the
guest's virtio-serial port. So `AgentClient` talks to a microVM's agent
exactly as to a container's. A new host end (emberd restarted) first sends
RESET, so the guest drops what the old one left open. What comes from the
guest is hostile: frames over MAX_PAYLOAD end the port connection, and
frames for channels the host did not open are ignored.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Coroutine
from dataclasses import dataclass, field
from typing import Any

from ember.agent.channels import CLOSE, DATA, HEADER, MAX_PAYLOAD, OPEN, RESET, encode


@dataclass
class _Channel:
    writer: asyncio.StreamWriter
    guest_done: asyncio.Event = field(default_factory=asyncio.Event)


class HostChannels:
    def __init__(self, port_socket: str, agent_socket: str) -> None:
        self.port_socket = port_socket  # QEMU's chardev socket
        self.agent_socket = agent_socket  # where AgentClient connects
        self._port_writer: asyncio.StreamWriter | None = None
        self._server: asyncio.AbstractServer | None = None
        self._channels: dict[int, _Channel] = {}
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        reader, self._port_writer = await asyncio.open_unix_connection(self.port_socket)
        self._port_writer.write(encode(0, RESET))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.agent_socket)
        self._server = await asyncio.start_unix_server(self._accept, self.agent_socket)
        os.chmod(self.agent_socket, 0o600)
        self._spawn(self._from_guest(reader))

    def _spawn(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _send(self, channel: int, kind: int, payload: bytes = b"") -> None:
        if self._port_writer is not None and not self._port_writer.is_closing():
            self._port_writer.write(encode(channel, kind, payload))

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One connection to agent.sock: a channel until both sides have finished."""
        channel = next(self._ids)
        state = self._channels[channel] = _Channel(writer)
        self._send(channel, OPEN)
        try:
            while data := await reader.read(MAX_PAYLOAD):
                self._send(channel, DATA, data)
                assert self._port_writer is not None
                await self._port_writer.drain()
        except (OSError, RuntimeError):  # the client or the VM went away
            pass
        self._send(channel, CLOSE)
        await state.guest_done.wait()
        self._channels.pop(channel, None)
        writer.close()

    async def _from_guest(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                header = await reader.readexactly(HEADER.size)
                channel, kind, length = HEADER.unpack(header)
                if length > MAX_PAYLOAD:
                    return  # the guest is hostile or broken: its channels end
                payload = await reader.readexactly(length) if length else b""
                state = self._channels.get(channel)
                if state is None:
                    continue
                # The connection may be gone already (the client hung up): uvloop
                # then raises RuntimeError, asyncio's own transports OSError.
                try:
                    if kind == DATA:
                        state.writer.write(payload)
                        await state.writer.drain()
                    elif kind == CLOSE:
                        state.writer.write_eof()
                except (OSError, RuntimeError):
                    state.guest_done.set()
                if kind == CLOSE:
                    state.guest_done.set()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the VM is gone
        finally:
            for state in self._channels.values():
                state.guest_done.set()
                state.writer.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        if self._port_writer is not None:
            self._port_writer.close()
        for task in list(self._tasks):
            task.cancel()
        for state in self._channels.values():
            state.guest_done.set()
            state.writer.close()
        self._channels.clear()
