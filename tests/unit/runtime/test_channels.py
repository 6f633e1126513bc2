"""Agent channels over one stream, both ends: the host's (asyncio) and the guest's.

A Unix socket stands in for QEMU's chardev socket of the virtio-serial port;
a thread echoes upper-cased what each channel brings, as the agent would serve it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
from pathlib import Path

import pytest
import uvloop

from ember.agent.channels import ChannelListener, PortMux
from ember.runtime.channels import HostChannels


def _echo_agent(listener: ChannelListener) -> None:
    while True:
        conn, _ = listener.accept()

        def serve(conn: socket.socket = conn) -> None:
            # Some clients hang up before their answer: the pipe breaks, as it would
            # for the agent, which then ends that connection only.
            with conn, contextlib.suppress(OSError):
                while data := conn.recv(65536):
                    conn.sendall(data.upper())

        threading.Thread(target=serve, daemon=True).start()


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])  # emberd runs on uvloop
def test_connections_travel_as_channels_over_one_stream(tmp_path: Path, loop: str) -> None:
    factory = uvloop.new_event_loop if loop == "uvloop" else asyncio.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(_scenario(tmp_path))


async def _scenario(tmp_path: Path) -> None:
    port_path, agent_path = str(tmp_path / "port.sock"), str(tmp_path / "agent.sock")
    qemu = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)  # QEMU's chardev server
    qemu.bind(port_path)
    qemu.listen(1)
    host = HostChannels(port_path, agent_path)
    start = asyncio.create_task(host.start())
    guest_end, _ = await asyncio.to_thread(qemu.accept)
    await start
    listener = ChannelListener()
    threading.Thread(target=PortMux(guest_end.fileno(), listener).serve, daemon=True).start()
    threading.Thread(target=_echo_agent, args=(listener,), daemon=True).start()

    async def exchange(message: bytes) -> bytes:
        reader, writer = await asyncio.open_unix_connection(agent_path)
        writer.write(message)
        writer.write_eof()
        answer = await reader.read()  # until the guest side closes the channel
        writer.close()
        return answer

    big = b"x" * 300_000  # several frames each way
    answers = await asyncio.gather(exchange(b"one"), exchange(b"two"), exchange(big))
    assert answers == [b"ONE", b"TWO", big.upper()]
    # A client that hangs up before its answer comes leaves the others unharmed.
    for _ in range(3):
        _, writer = await asyncio.open_unix_connection(agent_path)
        writer.write(b"x" * 200_000)
        writer.close()
    assert await exchange(b"after") == b"AFTER"
    await host.close()
    guest_end.close()
    qemu.close()
