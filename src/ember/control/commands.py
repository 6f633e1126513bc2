"""Commands: run (blocking or detached), list, get and wait, kill, logs, stdin."""

from __future__ import annotations

import codecs
import contextlib
import logging
import shlex
from collections.abc import AsyncIterable, AsyncIterator
from typing import TYPE_CHECKING, Any

from sqlalchemy import select
from sqlalchemy.orm import Session as DbSession

from ember.runtime import AgentUnavailableError, ExitStatus, OutputChunk
from ember.store import models
from ember.wire import errors
from ember.wire.command import RunCommandRequest

from .agent_calls import agent_errors
from .auth import Principal
from .ids import new_id
from .states import raise_unless_running
from .views import command_view

if TYPE_CHECKING:
    from .plane import ControlPlane

log = logging.getLogger("ember.control")


class _TextStreams:
    """Incremental UTF-8 decoding per stream: a character split across chunks stays whole."""

    def __init__(self) -> None:
        self._decoders = {
            name: codecs.getincrementaldecoder("utf-8")(errors="replace")
            for name in ("stdout", "stderr")
        }

    def decode(self, chunk: OutputChunk) -> str:
        return self._decoders[chunk.stream].decode(chunk.data)

    def flush(self) -> list[tuple[str, str]]:
        return [
            (name, text)
            for name, d in self._decoders.items()
            if (text := d.decode(b"", final=True))
        ]


class Commands:
    def __init__(self, plane: ControlPlane) -> None:
        self.plane = plane
        self._stdin_written: dict[str, int] = {}  # bytes sent to each command's stdin

    async def _command(
        self, principal: Principal, session_id: str, cmd_id: str
    ) -> tuple[models.Command, models.Session]:
        session, _ = await self.plane.load_session(principal, session_id)
        row = await self.plane.db.run(lambda db: db.get(models.Command, cmd_id))
        if row is None or row.session_id != session_id:
            raise errors.CommandNotFoundError(f"no command {cmd_id!r} in session {session_id}")
        return row, session

    async def _prepare(
        self, principal: Principal, session_id: str, request: RunCommandRequest
    ) -> tuple[models.Session, models.Command, dict[str, Any]]:
        """The session, the command's row (not yet stored) and the agent's exec arguments."""
        session, sandbox = await self.plane.running_session(principal, session_id)
        cwd = request.cwd or session.cwd
        if not cwd.startswith("/"):
            cwd = f"{session.cwd.rstrip('/')}/{cwd}"
        row = models.Command(
            id=new_id("cmd"),
            session_id=session_id,
            name=request.command,
            args=list(request.args),
            cwd=cwd,
            sudo=request.sudo,
            started_at=0,
            exit_code=None,
            duration_ms=None,
        )
        exec_args = {
            "cwd": cwd,
            "env": {**sandbox.env, **request.env},
            "user": "root" if request.sudo else "default",
            "timeout_ms": request.timeout,
            "stdin": request.stdin or request.attach_stdin,
        }
        return session, row, exec_args

    async def _store(
        self, session: models.Session, row: models.Command, reply: dict[str, Any]
    ) -> None:
        row.started_at = int(reply["started_at_ms"])
        await self.plane.db.run(lambda db: db.add(row))
        log.info(
            "session %s: command %s: %s", session.id, row.id, shlex.join([row.name, *row.args])
        )

    async def start(
        self, principal: Principal, session_id: str, request: RunCommandRequest
    ) -> models.Command:
        """Start a detached command; its exit code is recorded when it ends."""
        session, row, exec_args = await self._prepare(principal, session_id, request)
        with agent_errors(self.plane, session):
            reply = await self.plane.agent(session).exec(row.id, [row.name, *row.args], **exec_args)
        await self._store(session, row, reply)
        self.plane.spawn(self._watch(session, row.id), f"watch-{row.id}")
        return row

    async def run_stream(
        self, principal: Principal, session_id: str, request: RunCommandRequest
    ) -> AsyncIterator[dict[str, Any]]:
        """The blocking form as NDJSON objects: the command, its logs, the finished command.

        One agent connection carries the start, the output and the exit.
        """
        session, row, exec_args = await self._prepare(principal, session_id, request)
        stream = self.plane.agent(session).run(row.id, [row.name, *row.args], **exec_args)
        with agent_errors(self.plane, session):
            reply = await anext(stream)
        assert isinstance(reply, dict)
        await self._store(session, row, reply)

        async def lines() -> AsyncIterator[dict[str, Any]]:
            finished = row
            recorded = False
            text = _TextStreams()
            try:
                yield {"command": command_view(row).model_dump(mode="json")}
                async for item in stream:
                    if isinstance(item, OutputChunk):
                        if request.logs and (data := text.decode(item)):
                            yield {"stream": item.stream, "data": data}
                    elif isinstance(item, ExitStatus):
                        for name, data in text.flush():
                            if request.logs:
                                yield {"stream": name, "data": data}
                        finished = await self._record_exit(row.id, item)
                        recorded = True
                yield {"command": command_view(finished).model_dump(mode="json")}
            except AgentUnavailableError:
                yield _stream_error(
                    errors.SandboxStoppedError("the session stopped while the command ran")
                )
            finally:
                await stream.aclose()
                if not recorded:  # the client left early: record the exit anyway
                    self.plane.spawn(self._watch(session, row.id), f"watch-{row.id}")

        return lines()

    async def _watch(self, session: models.Session, cmd_id: str) -> None:
        """Record the exit code when the command ends, whoever is listening."""
        with contextlib.suppress(AgentUnavailableError):
            status = await self.plane.agent(session).wait(cmd_id)
            await self._record_exit(cmd_id, status)

    async def _record_exit(self, cmd_id: str, status: ExitStatus) -> models.Command:
        def record(db: DbSession) -> models.Command:
            row = db.get(models.Command, cmd_id)
            assert row is not None
            if row.exit_code is None:
                row.exit_code, row.duration_ms = status.exit_code, status.duration_ms
            return row

        return await self.plane.db.run(record)

    async def watch_unfinished(self, session_id: str) -> None:
        """After a restart, watch the adopted session's commands again."""
        session = await self.plane.db.run(lambda db: db.get(models.Session, session_id))
        assert session is not None
        unfinished = await self.plane.db.run(
            lambda db: list(
                db.scalars(
                    select(models.Command.id).where(
                        models.Command.session_id == session_id, models.Command.exit_code.is_(None)
                    )
                )
            )
        )
        for cmd_id in unfinished:
            self.plane.spawn(self._watch(session, cmd_id), f"watch-{cmd_id}")

    async def _log_items(
        self, session: models.Session, cmd_id: str
    ) -> AsyncIterator[dict[str, Any] | ExitStatus]:
        text = _TextStreams()
        async for item in self.plane.agent(session).logs(cmd_id):
            if isinstance(item, OutputChunk):
                if data := text.decode(item):
                    yield {"stream": item.stream, "data": data}
            else:
                for stream, data in text.flush():
                    yield {"stream": stream, "data": data}
                yield item

    async def logs(
        self, principal: Principal, session_id: str, cmd_id: str
    ) -> AsyncIterator[dict[str, Any]]:
        _, session = await self._command(principal, session_id, cmd_id)
        raise_unless_running(session)

        async def lines() -> AsyncIterator[dict[str, Any]]:
            try:
                async for item in self._log_items(session, cmd_id):
                    if isinstance(item, ExitStatus):
                        await self._record_exit(cmd_id, item)
                    else:
                        yield item
            except AgentUnavailableError:
                yield _stream_error(errors.SandboxStoppedError("the session stopped"))

        return lines()

    async def get(
        self, principal: Principal, session_id: str, cmd_id: str, *, wait: bool
    ) -> models.Command:
        row, session = await self._command(principal, session_id, cmd_id)
        if not wait or row.exit_code is not None:
            return row
        with agent_errors(self.plane, session, not_found=errors.CommandNotFoundError):
            status = await self.plane.agent(session).wait(cmd_id)
        return await self._record_exit(cmd_id, status)

    async def query(self, principal: Principal, session_id: str) -> list[models.Command]:
        await self.plane.load_session(principal, session_id)
        return await self.plane.db.run(
            lambda db: list(
                db.scalars(
                    select(models.Command)
                    .where(models.Command.session_id == session_id)
                    .order_by(models.Command.started_at, models.Command.id)
                )
            )
        )

    async def kill(
        self, principal: Principal, session_id: str, cmd_id: str, signal: int
    ) -> models.Command:
        row, session = await self._command(principal, session_id, cmd_id)
        if row.exit_code is None:
            session, _ = await self.plane.running_session(principal, session_id)
            with agent_errors(self.plane, session, not_found=errors.CommandNotFoundError):
                await self.plane.agent(session).signal(cmd_id, signal)
        return row

    async def write_stdin(
        self, principal: Principal, session_id: str, cmd_id: str, body: AsyncIterable[bytes]
    ) -> int:
        """Ember's form: the whole body to stdin, then close it."""
        session = await self._stdin_session(principal, session_id, cmd_id)
        written = await self._to_stdin(session, cmd_id, body, close=True)
        self._stdin_written[cmd_id] = self._stdin_written.get(cmd_id, 0) + written
        return self._stdin_written[cmd_id]

    async def write_stdin_chunk(
        self,
        principal: Principal,
        session_id: str,
        cmd_id: str,
        data: bytes,
        offset: int | None,
        close: bool,
    ) -> int:
        """The official Python SDK's form: a chunk at `offset` (retries are idempotent)."""
        session = await self._stdin_session(principal, session_id, cmd_id)
        written = self._stdin_written.get(cmd_id, 0)
        if offset is not None:
            if offset > written:
                raise errors.ConflictError(
                    f"stdin offset {offset} is past the {written} bytes written"
                )
            data = data[written - offset :]
        if data or close:

            async def chunk() -> AsyncIterator[bytes]:
                if data:
                    yield data

            written += await self._to_stdin(session, cmd_id, chunk(), close=close)
            self._stdin_written[cmd_id] = written
        return written

    async def _stdin_session(
        self, principal: Principal, session_id: str, cmd_id: str
    ) -> models.Session:
        await self._command(principal, session_id, cmd_id)
        session, _ = await self.plane.running_session(principal, session_id)
        return session

    async def _to_stdin(
        self, session: models.Session, cmd_id: str, chunks: AsyncIterable[bytes], *, close: bool
    ) -> int:
        try:
            with agent_errors(self.plane, session, not_found=errors.CommandNotFoundError):
                return await self.plane.agent(session).write_stdin(cmd_id, chunks, close=close)
        except errors.BadRequestError as exc:
            raise errors.CommandStdinUnavailableError(exc.message) from exc


def _stream_error(error: errors.EmberError) -> dict[str, Any]:
    return {"stream": "error", "data": {"code": error.code, "message": error.message}}
