"""Benchmarks through Ember's container runtime and its agent."""

from __future__ import annotations

import asyncio
import contextlib
import os
import tarfile
from collections.abc import AsyncIterator, Coroutine
from typing import Any, TypeVar

from baselines import ECHO_ARGV, EXPECTED
from ember.runtime import ExitStatus, OutputChunk, SessionSpec
from ember.runtime.container import ContainerRuntime
from measure import ms_since, now

TRUE_ARGV = ["/bin/true"]
CHUNK_BYTES = 1024 * 1024
T = TypeVar("T")


class Sessions:
    """Starts sessions with unique `<prefix>-...` ids and discards every one of them."""

    def __init__(self, runtime: ContainerRuntime, image_id: str, prefix: str) -> None:
        self.runtime = runtime
        self.image_id = image_id
        self.prefix = prefix
        self.live: list[str] = []
        self._n = 0

    def new_id(self, tag: str) -> str:
        self._n += 1
        return f"{self.prefix}-{tag}{self._n}"

    async def start(self, session_id: str) -> None:
        self.live.append(session_id)  # before start: an interrupted start is cleaned too
        spec = SessionSpec(session_id=session_id, image_id=self.image_id)
        await finish_even_if_cancelled(self.runtime.start(spec))

    async def discard(self, session_id: str) -> None:
        await finish_even_if_cancelled(self.runtime.discard(session_id))
        self.live.remove(session_id)

    async def close(self) -> list[str]:
        """Discard whatever is left; returns the failures (cleanup keeps going)."""
        errors = []
        cancelled = False
        for session_id in list(self.live):
            try:
                await self.discard(session_id)
            except asyncio.CancelledError:  # a Ctrl-C pending from before: clean up, then honour it
                cancelled = True
            except Exception as exc:
                errors.append(f"{session_id}: {exc!r}")
        if cancelled:
            raise asyncio.CancelledError
        return errors


async def finish_even_if_cancelled(step: Coroutine[Any, Any, T]) -> T:
    """Await `step`; if we are cancelled meanwhile, let it finish first, then re-raise.

    Cancelling start() or discard() half way is unsafe: their work in
    `asyncio.to_thread` goes on after the cancellation, racing the cleanup (a
    cancelled start() can leave mounts behind), and a `runc run` killed half
    way leaves its cgroups behind. A step takes ~0.1 s, so waiting is cheap.
    """
    task = asyncio.ensure_future(step)
    try:
        return await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(Exception):  # its failure is not the news here
            await task
        raise


async def run_to_exit(
    runtime: ContainerRuntime, session_id: str, cmd_id: str, argv: list[str]
) -> tuple[float | None, bytes]:
    """One `run` (exec and follow, the path of a blocking command) to the exit status.

    Returns (when the first stdout byte came, stdout); the time is a
    `measure.now()` reading, or None without output.
    """
    agent = runtime.agent(session_id)
    first: float | None = None
    stdout = bytearray()
    status: ExitStatus | None = None
    async for item in agent.run(cmd_id, argv):
        if isinstance(item, dict):
            continue  # the exec reply
        if isinstance(item, OutputChunk):
            if item.stream == "stdout" and item.data:
                if first is None:
                    first = now()
                stdout += item.data
        else:
            status = item
    if status is None or status.exit_code != 0:
        raise RuntimeError(f"{argv} in {session_id} ended with {status}")
    return first, bytes(stdout)


async def start_to_first_output(sessions: Sessions) -> tuple[float, float]:
    """A fresh session, then `echo hi` through the agent; the session is discarded after.

    Returns (ms from start() to the first stdout byte, ms spent in start() alone).
    """
    session_id = sessions.new_id("s")
    try:
        start = now()
        await sessions.start(session_id)
        started_ms = ms_since(start)
        first, stdout = await run_to_exit(sessions.runtime, session_id, "c1", ECHO_ARGV)
        if first is None or stdout != EXPECTED:
            raise RuntimeError(f"echo in a session printed {stdout!r}")
        total_ms = (first - start) * 1000.0
    finally:
        await sessions.discard(session_id)
    return total_ms, started_ms


class RoundTrip:
    """`/bin/true` through one long-lived session's agent: exec, then logs to its exit."""

    def __init__(self, sessions: Sessions) -> None:
        self.sessions = sessions
        self.session_id = sessions.new_id("rt")
        self._n = 0

    async def open(self) -> None:
        await self.sessions.start(self.session_id)

    async def once(self) -> float:
        self._n += 1
        start = now()
        await run_to_exit(self.sessions.runtime, self.session_id, f"rt{self._n}", TRUE_ARGV)
        return ms_since(start)

    # -- throughput, in the same session --------------------------------------

    async def write_file(self, name: str, payload: bytes, size: int) -> float:
        """write_tar of one `size`-byte file made of repeated `payload`; seconds."""
        start = now()
        entries = await self.sessions.runtime.agent(self.session_id).write_tar(
            "/tmp", _tar_stream(name, payload, size)
        )
        elapsed = now() - start
        if entries != 1:
            raise RuntimeError(f"write_tar extracted {entries} entries, expected 1")
        return elapsed

    async def read_file(self, name: str, size: int) -> float:
        """read_file of `/tmp/<name>` to its end; seconds (the page cache is warm)."""
        got = 0
        start = now()
        async for chunk in self.sessions.runtime.agent(self.session_id).read_file(f"/tmp/{name}"):
            got += len(chunk)
        elapsed = now() - start
        if got != size:
            raise RuntimeError(f"read_file returned {got} bytes, expected {size}")
        return elapsed

    async def remove_file(self, name: str) -> None:
        await self.sessions.runtime.agent(self.session_id).remove(f"/tmp/{name}")


async def _tar_stream(name: str, payload: bytes, size: int) -> AsyncIterator[bytes]:
    """A tar archive of one regular file, generated as it is sent."""
    assert size % tarfile.BLOCKSIZE == 0 and len(payload) == CHUNK_BYTES
    info = tarfile.TarInfo(name)
    info.size = size
    info.mode = 0o644
    yield info.tobuf(format=tarfile.PAX_FORMAT)
    left = size
    while left:
        piece = payload[: min(left, len(payload))]
        left -= len(piece)
        yield piece
    yield b"\0" * (2 * tarfile.BLOCKSIZE)  # end-of-archive marker


def random_payload() -> bytes:
    """1 MiB of incompressible bytes, repeated to make the transferred file."""
    return os.urandom(CHUNK_BYTES)
