"""Files of a running session: mkdir, read (streamed), write (a tar stream)."""

from __future__ import annotations

import posixpath
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING

from ember.runtime import AgentUnavailableError
from ember.wire import errors

from .agent_calls import agent_errors
from .auth import Principal

if TYPE_CHECKING:
    from .plane import ControlPlane


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

    async def write(
        self, principal: Principal, session_id: str, root: str | None, body: AsyncIterable[bytes]
    ) -> int:
        session, _ = await self.plane.running_session(principal, session_id)
        target = sandbox_path(".", root or "/", session.cwd)
        with agent_errors(self.plane, session):
            return await self.plane.agent(session).write_tar(target, body)
