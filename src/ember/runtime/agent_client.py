"""The host side of the agent protocol (docs/agent-protocol.md), on asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import stat
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from ember.agent import protocol
from ember.agent.protocol import AgentError

__all__ = [
    "AgentClient",
    "AgentError",
    "AgentUnavailableError",
    "ExitStatus",
    "OutputChunk",
    "Terminal",
]


CALL_TIMEOUT_S = 30.0


class AgentUnavailableError(Exception):
    """The agent's socket is missing, unsafe, or the agent stopped answering."""


@dataclass(frozen=True)
class OutputChunk:
    stream: str  # "stdout" | "stderr"
    data: bytes


@dataclass(frozen=True)
class ExitStatus:
    exit_code: int
    duration_ms: int
    dropped_bytes: int = 0


def connect_safely(path: str) -> socket.socket:
    """Connect to a Unix socket without following a symlink at `path`.

    The socket lives in a host directory the session cannot reach, but the
    check is cheap and keeps the promise even if a caller passes a path
    inside a sandbox: the path is opened with O_PATH|O_NOFOLLOW, must be a
    root-owned socket, and is connected through /proc/self/fd.
    """
    try:
        fd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as exc:
        raise AgentUnavailableError(f"agent socket {path}: {exc.strerror}") from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISSOCK(st.st_mode) or st.st_uid != 0:
            raise AgentUnavailableError(
                f"agent socket {path} is not a root-owned socket; refusing it"
            )
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM | socket.SOCK_CLOEXEC)
        try:
            sock.connect(f"/proc/self/fd/{fd}")
        except OSError as exc:
            sock.close()
            raise AgentUnavailableError(f"agent socket {path}: {exc.strerror}") from exc
        return sock
    finally:
        os.close(fd)


class _Conn:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    async def read_frame(self) -> tuple[bytes, bytes]:
        try:
            header = await self.reader.readexactly(protocol.HEADER_BYTES)
            kind, length = protocol.decode_header(header)
            payload = await self.reader.readexactly(length) if length else b""
        except asyncio.IncompleteReadError as exc:
            raise AgentUnavailableError("the agent closed the connection") from exc
        except protocol.ProtocolError as exc:
            raise AgentUnavailableError(f"the agent broke the protocol: {exc}") from exc
        return kind, payload

    async def read_reply(self) -> dict[str, Any]:
        kind, payload = await self.read_frame()
        if kind != protocol.JSON:
            raise AgentUnavailableError(f"expected a JSON reply from the agent, got {kind!r}")
        reply = protocol.decode_json(payload)
        if reply.get("ok") is False:
            error = reply.get("error") or {}
            raise AgentError(
                str(error.get("code", protocol.IO_ERROR)), str(error.get("message", ""))
            )
        return reply

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def send_stream(self, chunks: AsyncIterable[bytes]) -> None:
        """Send chunks as `D` frames, then `E`. If the agent stops reading (it
        refused something midway), its reply, not the broken pipe, is the news."""
        try:
            await self._send_stream(chunks)
        except (BrokenPipeError, ConnectionResetError):
            await self.read_reply()
            raise

    async def _send_stream(self, chunks: AsyncIterable[bytes]) -> None:
        async for chunk in chunks:
            for start in range(0, len(chunk), protocol.MAX_FRAME_BYTES):
                await self.send(
                    protocol.encode_frame(
                        protocol.DATA, chunk[start : start + protocol.MAX_FRAME_BYTES]
                    )
                )
        await self.send(protocol.encode_frame(protocol.END))


class Terminal:
    """A command on a pseudo-terminal in the session (see `AgentClient.terminal`)."""

    def __init__(self, conn: _Conn, close: Any) -> None:
        self._conn = conn
        self._close = close
        self.exit_code: int | None = None

    async def write(self, data: bytes) -> None:
        for start in range(0, len(data), protocol.MAX_FRAME_BYTES):
            await self._conn.send(
                protocol.encode_frame(protocol.DATA, data[start : start + protocol.MAX_FRAME_BYTES])
            )

    async def resize(self, cols: int, rows: int) -> None:
        await self._conn.send(protocol.encode_json({"resize": [cols, rows]}))

    async def hang_up(self) -> None:
        with contextlib.suppress(OSError):
            await self._conn.send(protocol.encode_frame(protocol.END))

    async def output(self) -> AsyncIterator[bytes]:
        """Terminal output until the command ends; then `exit_code` is set."""
        while True:
            kind, payload = await self._conn.read_frame()
            if kind == protocol.STDOUT:
                yield payload
            else:
                self.exit_code = int(protocol.decode_json(payload)["exit_code"])
                return

    async def close(self) -> None:
        await self._close()


def _exec_fields(
    cmd_id: str,
    argv: Sequence[str],
    cwd: str | None,
    env: Mapping[str, str] | None,
    user: str,
    timeout_ms: int | None,
    stdin: bool,
) -> dict[str, Any]:
    return {
        "cmd_id": cmd_id,
        "argv": list(argv),
        "cwd": cwd,
        "env": dict(env or {}),
        "user": user,
        "timeout_ms": timeout_ms,
        "stdin": stdin,
    }


async def _follow(conn: _Conn) -> AsyncIterator[OutputChunk | ExitStatus]:
    while True:
        kind, payload = await conn.read_frame()
        if kind == protocol.STDOUT:
            yield OutputChunk("stdout", payload)
        elif kind == protocol.STDERR:
            yield OutputChunk("stderr", payload)
        else:
            final = protocol.decode_json(payload)
            yield ExitStatus(final["exit_code"], final["duration_ms"], final["dropped_bytes"])
            return


class AgentClient:
    """One session's agent. Every call opens its own connection."""

    def __init__(self, socket_path: str) -> None:
        self.socket_path = socket_path

    @asynccontextmanager
    async def _open(self, op: str, fields: Mapping[str, Any]) -> AsyncIterator[_Conn]:
        sock = connect_safely(self.socket_path)
        reader, writer = await asyncio.open_unix_connection(
            sock=sock, limit=2 * protocol.MAX_FRAME_BYTES
        )
        conn = _Conn(reader, writer)
        try:
            await conn.send(protocol.encode_json({"op": op, **fields}))
            yield conn
        except (ConnectionError, BrokenPipeError) as exc:
            raise AgentUnavailableError(f"agent connection lost during {op}: {exc}") from exc
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

    async def call(
        self, op: str, *, timeout_s: float | None = CALL_TIMEOUT_S, **fields: Any
    ) -> dict[str, Any]:
        """One request, one reply. A stuck agent (say, stopped by a debugger) is
        reported as unavailable after `timeout_s` instead of hanging the caller."""

        async def exchange() -> dict[str, Any]:
            async with self._open(op, fields) as conn:
                return await conn.read_reply()

        try:
            return await asyncio.wait_for(exchange(), timeout_s)
        except TimeoutError as exc:
            raise AgentUnavailableError(
                f"the agent did not answer {op} within {timeout_s} s"
            ) from exc

    async def hello(self) -> dict[str, Any]:
        return await self.call("hello")

    async def restored(
        self,
        now: float,
        seed: bytes,
        hostname: str | None = None,
        network: tuple[str, int, str] | None = None,
    ) -> None:
        """A microVM's memory was restored: set its clock, reseed its RNG, name it,
        and give its eth0 `network` (address, prefix, gateway)."""
        fields: dict[str, Any] = {"time": now, "seed": seed.hex()}
        if hostname is not None:
            fields["hostname"] = hostname
        if network is not None:
            address, prefix, gateway = network
            fields["network"] = {"address": address, "prefix": prefix, "gateway": gateway}
        await self.call("restored", **fields)

    async def exec(
        self,
        cmd_id: str,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        user: str = "default",
        timeout_ms: int | None = None,
        stdin: bool = False,
    ) -> dict[str, Any]:
        return await self.call(
            "exec", **_exec_fields(cmd_id, argv, cwd, env, user, timeout_ms, stdin)
        )

    async def run(
        self,
        cmd_id: str,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        user: str = "default",
        timeout_ms: int | None = None,
        stdin: bool = False,
    ) -> AsyncGenerator[dict[str, Any] | OutputChunk | ExitStatus, None]:
        """Start a command and follow it on one connection: the exec reply, its output, its exit."""
        fields = _exec_fields(cmd_id, argv, cwd, env, user, timeout_ms, stdin) | {"follow": True}
        async with self._open("exec", fields) as conn:
            yield await conn.read_reply()
            async for item in _follow(conn):
                yield item

    async def logs(self, cmd_id: str) -> AsyncIterator[OutputChunk | ExitStatus]:
        """Every output chunk from the start, then the exit status."""
        async with self._open("logs", {"cmd_id": cmd_id}) as conn:
            await conn.read_reply()
            async for item in _follow(conn):
                yield item

    async def wait(self, cmd_id: str) -> ExitStatus:
        reply = await self.call("wait", timeout_s=None, cmd_id=cmd_id)
        return ExitStatus(reply["exit_code"], reply["duration_ms"])

    async def signal(self, cmd_id: str, signum: int) -> None:
        await self.call("signal", cmd_id=cmd_id, signal=int(signum))

    async def status(self, cmd_id: str) -> dict[str, Any]:
        return (await self.call("status", cmd_id=cmd_id))["command"]  # type: ignore[no-any-return]

    async def list_commands(self) -> list[dict[str, Any]]:
        return (await self.call("list"))["commands"]  # type: ignore[no-any-return]

    async def write_stdin(
        self, cmd_id: str, chunks: AsyncIterable[bytes], *, close: bool = True
    ) -> int:
        """Write to a command's stdin, then close it unless `close` is false; returns the bytes."""
        async with self._open("stdin", {"cmd_id": cmd_id, "close": close}) as conn:
            await conn.read_reply()
            await conn.send_stream(chunks)
            return int((await conn.read_reply())["bytes"])

    async def write_tar(
        self, root: str, chunks: AsyncIterable[bytes], *, user: str = "default"
    ) -> int:
        """Extract a tar stream (plain or compressed) under `root`; returns the entry count."""
        async with self._open("write_tar", {"root": root, "user": user}) as conn:
            await conn.read_reply()
            await conn.send_stream(chunks)
            return int((await conn.read_reply())["entries"])

    async def read_file(self, path: str, *, cwd: str | None = None) -> AsyncIterator[bytes]:
        """The file's bytes in chunks; raises AgentError(not_found) before the first."""
        async with self._open("read_file", {"path": path, "cwd": cwd}) as conn:
            await conn.read_reply()
            while True:
                kind, payload = await conn.read_frame()
                if kind == protocol.END:
                    return
                yield payload

    async def read_bytes(self, path: str, *, cwd: str | None = None) -> bytes:
        return b"".join([chunk async for chunk in self.read_file(path, cwd=cwd)])

    async def mkdir(
        self, path: str, *, cwd: str | None = None, parents: bool = False, user: str = "default"
    ) -> None:
        await self.call("mkdir", path=path, cwd=cwd, parents=parents, user=user)

    async def stat(self, path: str, *, cwd: str | None = None) -> dict[str, Any]:
        return (await self.call("stat", path=path, cwd=cwd))["stat"]  # type: ignore[no-any-return]

    async def listdir(self, path: str, *, cwd: str | None = None) -> list[dict[str, Any]]:
        return (await self.call("listdir", path=path, cwd=cwd))["entries"]  # type: ignore[no-any-return]

    async def remove(self, path: str, *, cwd: str | None = None, recursive: bool = False) -> None:
        await self.call("remove", path=path, cwd=cwd, recursive=recursive)

    async def rename(self, src: str, dst: str, *, cwd: str | None = None) -> None:
        await self.call("rename", src=src, dst=dst, cwd=cwd)

    async def terminal(
        self,
        argv: Sequence[str],
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        user: str = "default",
        cols: int = 80,
        rows: int = 24,
    ) -> Terminal:
        """Start `argv` on a pseudo-terminal; the caller must `close()` the result."""
        sock = connect_safely(self.socket_path)
        reader, writer = await asyncio.open_unix_connection(
            sock=sock, limit=2 * protocol.MAX_FRAME_BYTES
        )
        conn = _Conn(reader, writer)

        async def close() -> None:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()

        try:
            fields = {
                "argv": list(argv),
                "cwd": cwd,
                "env": dict(env or {}),
                "user": user,
                "cols": cols,
                "rows": rows,
            }
            await conn.send(protocol.encode_json({"op": "terminal", **fields}))
            await conn.read_reply()
        except BaseException:
            await close()
            raise
        return Terminal(conn, close)

    async def sync(self) -> None:
        await self.call("sync")
