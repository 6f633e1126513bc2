"""Files of a running session: mkdir, read (streamed), write (a tar stream)."""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterable, AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from isal import isal_zlib

from ember.runtime import AgentUnavailableError
from ember.wire import errors

from .agent_calls import agent_errors
from .auth import Principal

if TYPE_CHECKING:
    from .plane import ControlPlane

GZIP_WBITS = 31
INFLATE_CHUNK_BYTES = 1 << 20


def sandbox_path(path: str, cwd: str | None, session_cwd: str) -> str:
    """An absolute path inside the sandbox; `..` never climbs above its root."""
    if not path or "\0" in path or (cwd is not None and "\0" in cwd):
        raise errors.InvalidPathError("path must be a non-empty string without NUL bytes")
    base = cwd if cwd else session_cwd
    if not base.startswith("/"):
        base = posixpath.join(session_cwd, base)
    return posixpath.normpath(posixpath.join("/", base, path))


class Files:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane

    async def mkdir(
        self, principal: Principal, session_id: str, path: str, cwd: str | None, recursive: bool
    ) -> None:
        session, _ = await self.plane.running_session(principal, session_id)
        target = sandbox_path(path, cwd, session.cwd)
        with agent_errors(self.plane, session, not_found=errors.FileNotFoundError_):
            await self.plane.agent(session).mkdir(target, parents=recursive)

    async def read(
        self, principal: Principal, session_id: str, path: str, cwd: str | None
    ) -> AsyncIterator[bytes]:
        """The file's bytes; raises before the first chunk if it cannot be read."""
        session, _ = await self.plane.running_session(principal, session_id)
        target = sandbox_path(path, cwd, session.cwd)
        chunks = self.plane.agent(session).read_file(target)
        with agent_errors(self.plane, session, not_found=errors.FileNotFoundError_):
            try:
                first = await anext(chunks)
            except StopAsyncIteration:
                first = b""

        async def stream() -> AsyncIterator[bytes]:
            try:
                if first:
                    yield first
                async for chunk in chunks:
                    yield chunk
            except AgentUnavailableError:
                return  # the response is cut short; the client sees a truncated body

        return stream()

    async def stat(
        self, principal: Principal, session_id: str, path: str, cwd: str | None
    ) -> dict[str, Any]:
        session, _ = await self.plane.running_session(principal, session_id)
        target = sandbox_path(path, cwd, session.cwd)
        with agent_errors(self.plane, session, not_found=errors.FileNotFoundError_):
            return await self.plane.agent(session).stat(target)

    async def listdir(
        self, principal: Principal, session_id: str, path: str, cwd: str | None
    ) -> list[dict[str, Any]]:
        session, _ = await self.plane.running_session(principal, session_id)
        target = sandbox_path(path, cwd, session.cwd)
        with agent_errors(self.plane, session, not_found=errors.FileNotFoundError_):
            return await self.plane.agent(session).listdir(target)

    async def remove(
        self, principal: Principal, session_id: str, path: str, cwd: str | None, recursive: bool
    ) -> None:
        session, _ = await self.plane.running_session(principal, session_id)
        target = sandbox_path(path, cwd, session.cwd)
        if target == "/":
            raise errors.InvalidPathError("refusing to remove the sandbox's root directory")
        with agent_errors(self.plane, session, not_found=errors.FileNotFoundError_):
            await self.plane.agent(session).remove(target, recursive=recursive)

    async def rename(
        self, principal: Principal, session_id: str, src: str, dst: str, cwd: str | None
    ) -> None:
        session, _ = await self.plane.running_session(principal, session_id)
        source = sandbox_path(src, cwd, session.cwd)
        target = sandbox_path(dst, cwd, session.cwd)
        with agent_errors(self.plane, session, not_found=errors.FileNotFoundError_):
            await self.plane.agent(session).rename(source, target)

    async def write(
        self, principal: Principal, session_id: str, root: str | None, body: AsyncIterable[bytes]
    ) -> int:
        session, _ = await self.plane.running_session(principal, session_id)
        target = sandbox_path(".", root or "/", session.cwd)
        with agent_errors(self.plane, session):
            return await self.plane.agent(session).write_tar(target, gunzipped(body))


async def gunzipped(body: AsyncIterable[bytes]) -> AsyncIterator[bytes]:
    """The body, decompressed here when it is gzip (the usual case).

    Inflating on the host with ISA-L runs at twice zlib's speed and beside
    the agent's writing, instead of in the agent's single Python thread.
    Output per call is bounded, so a gzip bomb costs the sandbox disk space
    (bounded by its disk limit), not emberd memory or event-loop time.
    """
    chunks = aiter(body)
    first = b""
    async for chunk in chunks:
        first += chunk
        if len(first) >= 2:
            break
    if not first.startswith(b"\x1f\x8b"):
        if first:
            yield first
        async for chunk in chunks:
            yield chunk
        return
    inflater = isal_zlib.decompressobj(GZIP_WBITS)

    def inflate(data: bytes) -> Iterator[bytes]:
        nonlocal inflater
        while data:
            try:
                out = inflater.decompress(data, INFLATE_CHUNK_BYTES)
            except isal_zlib.error as exc:  # type: ignore[misc]  # isal ships no type for it
                raise errors.BadRequestError(f"the body is not valid gzip: {exc}") from None
            data = inflater.unconsumed_tail
            if inflater.eof:  # a gzip file may hold several members
                data = inflater.unused_data + data
                inflater = isal_zlib.decompressobj(GZIP_WBITS)
            if out:
                yield out

    for out in inflate(first):
        yield out
    async for chunk in chunks:
        for out in inflate(chunk):
            yield out
    if tail := inflater.flush():
        yield tail
