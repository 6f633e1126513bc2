"""The asynchronous SDK: `AsyncSandbox`, `AsyncCommand`, `AsyncSnapshot`, over `_core` and httpx.

The twin of `_sync.py`, method for method; the parity test keeps them so.
"""

from __future__ import annotations

import asyncio
import builtins
import os
from collections.abc import AsyncIterator, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, TypeVar

import httpx

from ember.wire.command import Command as CommandModel
from ember.wire.command import CommandList, CommandResponse
from ember.wire.files import FileListResponse, FileStat, FileStatResponse
from ember.wire.sandbox import SandboxResponse
from ember.wire.session import Session, SessionResponse, StopResponse
from ember.wire.snapshot import Snapshot as SnapshotModel
from ember.wire.snapshot import SnapshotResponse

from . import _core, _requests
from ._config import Config
from ._errors import transport_error

T = TypeVar("T")


class AsyncClient:
    """A connection to an Ember server. Usually made for you from the configuration."""

    def __init__(
        self, url: str | None = None, token: str | None = None, *, timeout: float = 300.0
    ) -> None:
        self.config = Config.resolve(url, token)
        self._http = httpx.AsyncClient(
            base_url=self.config.url,
            headers={"authorization": f"Bearer {self.config.token}", "user-agent": "ember-sdk"},
            timeout=timeout,
        )

    async def send(self, call: _core.Call) -> httpx.Response:
        try:
            response = await self._http.send(
                call.request(self._http, self.config), stream=call.stream
            )
            if call.stream and response.is_error:
                await response.aread()
            return response
        except httpx.TransportError as exc:
            raise transport_error(exc, self.config.url) from exc

    async def lines(self, response: httpx.Response) -> AsyncIterator[_core.LogLine | CommandModel]:
        """The items of a streamed NDJSON response, as they arrive; closes it at the end."""
        try:
            _core.check(response)
            async for line in response.aiter_lines():
                item = _core.parse_stream_line(line)
                if item is not None:
                    yield item
        finally:
            await response.aclose()

    async def drive(self, flow: _core.Flow[T]) -> T:
        """Run a `_core` flow: send its calls, sleep its sleeps, return its result."""
        try:
            step = next(flow)
            while True:
                if isinstance(step, _core.Sleep):
                    await asyncio.sleep(step.seconds)
                    step = flow.send(None)
                else:
                    step = flow.send(await self.send(step))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]  # the flow's declared result

    async def close(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()


_default: AsyncClient | None = None


def default_client() -> AsyncClient:
    global _default
    if _default is None:
        _default = AsyncClient()
    return _default


class AsyncCommand:
    """A command in a session: detached, or finished (from `run_command`)."""

    def __init__(
        self, sandbox: AsyncSandbox, model: CommandModel, output: list[_core.LogLine] | None = None
    ) -> None:
        self._sandbox = sandbox
        self.model = model
        self._output = output

    @property
    def id(self) -> str:
        return self.model.id

    @property
    def exit_code(self) -> int | None:
        return self.model.exit_code

    def _path(self) -> str:
        return f"/v2/sandboxes/sessions/{self.model.session_id}/cmd/{self.model.id}"

    async def logs(self) -> AsyncIterator[_core.LogLine]:
        """Every stdout and stderr chunk from the start, live until the command ends."""
        if self._output is not None:
            for chunk in self._output:
                yield chunk
            return
        response = await self._sandbox._client.send(
            _core.Call("GET", self._path() + "/logs", stream=True)
        )
        async for item in self._sandbox._client.lines(response):
            if isinstance(item, _core.LogLine):
                yield item

    async def wait(self) -> int:
        """Block until the command exits; returns its exit code."""
        if self.model.exit_code is None:
            response = await self._sandbox._client.send(
                _core.Call("GET", self._path(), params={"wait": "true"})
            )
            self.model = _core.parse(response, CommandResponse).command
        assert self.model.exit_code is not None
        return self.model.exit_code

    async def output(self, stream: str = "both") -> str:
        """The command's output so far ("stdout", "stderr" or "both"), waiting for it to end."""
        if self._output is None:
            self._output = [line async for line in self.logs()]
            await self.wait()
        return "".join(line.data for line in self._output if stream in ("both", line.stream))

    async def stdout(self) -> str:
        return await self.output("stdout")

    async def stderr(self) -> str:
        return await self.output("stderr")

    async def kill(self, signal: int = 15) -> None:
        response = await self._sandbox._client.send(
            _core.Call("POST", self._path() + "/kill", json={"signal": int(signal)})
        )
        _core.check(response)

    async def write_stdin(self, data: bytes | str) -> int:
        """Send `data` to the command's stdin and close it (start it with `stdin=True`)."""
        payload = data.encode() if isinstance(data, str) else data
        response = await self._sandbox._client.send(
            _core.Call("POST", self._path() + "/stdin", content=payload)
        )
        _core.check(response)
        return int(response.json()["bytes"])


class AsyncFilesystem:
    """`sandbox.fs`: paths are relative to the session's working directory."""

    def __init__(self, sandbox: AsyncSandbox) -> None:
        self._sandbox = sandbox

    async def stat(self, path: str) -> FileStat:
        response = await self._sandbox._session_call(
            lambda sid: _requests.fs(sid, "stat", {"path": path})
        )
        return _core.parse(response, FileStatResponse).stat

    async def exists(self, path: str) -> bool:
        response = await self._sandbox._session_call(
            lambda sid: _requests.fs(sid, "stat", {"path": path})
        )
        if response.status_code == 404:
            return False
        _core.check(response)
        return True

    async def listdir(self, path: str = ".") -> builtins.list[FileStat]:
        response = await self._sandbox._session_call(
            lambda sid: _requests.fs(sid, "list", {"path": path})
        )
        return _core.parse(response, FileListResponse).entries

    async def remove(self, path: str, *, recursive: bool = False) -> None:
        body = {"path": path, "recursive": recursive}
        _core.check(
            await self._sandbox._session_call(lambda sid: _requests.fs(sid, "remove", body))
        )

    async def rename(self, src: str, dst: str) -> None:
        body = {"src": src, "dst": dst}
        _core.check(
            await self._sandbox._session_call(lambda sid: _requests.fs(sid, "rename", body))
        )


class AsyncSandbox:
    """A sandbox: a named, durable Linux environment. See the module docs for an example."""

    def __init__(
        self, state: _core.SandboxState, client: AsyncClient, *, delete_on_exit: bool = False
    ) -> None:
        self._state = state
        self._client = client
        self.delete_on_exit = delete_on_exit
        self.fs = AsyncFilesystem(self)

    # -- finding and making sandboxes ----------------------------------------------

    @classmethod
    async def create(
        cls, *, client: AsyncClient | None = None, delete_on_exit: bool = False, **options: Any
    ) -> AsyncSandbox:
        """Create a sandbox and start its first session. Options: see `_requests.create_body`."""
        client = client or default_client()
        response = await client.send(
            _core.Call("POST", "/v3/sandboxes", json=_requests.create_body(**options))
        )
        return cls._from(_core.parse(response, SandboxResponse), client, delete_on_exit)

    @classmethod
    async def get(
        cls, name: str, *, resume: bool = False, client: AsyncClient | None = None
    ) -> AsyncSandbox:
        client = client or default_client()
        response = await client.send(_core.get_sandbox(name, resume=resume))
        return cls._from(_core.parse(response, SandboxResponse), client, False)

    @classmethod
    async def get_or_create(
        cls, name: str, *, client: AsyncClient | None = None, **options: Any
    ) -> AsyncSandbox:
        client = client or default_client()
        body, _ = await client.drive(
            _core.get_or_create_flow(name, _requests.create_body(**options))
        )
        return cls._from(body, client, False)

    @classmethod
    async def list(
        cls, *, client: AsyncClient | None = None, page_size: int | None = None, **query: Any
    ) -> AsyncIterator[AsyncSandbox]:
        """Every sandbox of the project, fetched a page at a time."""
        client = client or default_client()
        cursor = None
        while True:
            call = _requests.list_sandboxes(page_size, cursor, **query)
            items, cursor = await client.drive(_core.pages(call, "sandboxes"))
            for item in items:
                yield cls._from(SandboxResponse.model_validate({"sandbox": item}), client, False)
            if not cursor:
                return

    @classmethod
    def _from(
        cls, response: SandboxResponse, client: AsyncClient, delete_on_exit: bool
    ) -> AsyncSandbox:
        state = _core.SandboxState(response.sandbox, response.session, list(response.routes))
        return cls(state, client, delete_on_exit=delete_on_exit)

    # -- what it is ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def status(self) -> str:
        return self._state.sandbox.status

    @property
    def paused(self) -> bool:
        """Its session is paused (it reads as stopped, as the reference's states go)."""
        return bool(self._state.session is not None and self._state.session.paused)

    @property
    def session(self) -> Session | None:
        return self._state.session

    @property
    def info(self) -> Any:
        """The sandbox as the server last described it (an `ember.wire.sandbox.Sandbox`)."""
        return self._state.sandbox

    @property
    def cwd(self) -> str:
        return self._state.session.cwd if self._state.session else "/vercel/sandbox"

    def domain(self, port: int) -> str:
        """The URL at which the server exposes `port` of this sandbox."""
        for route in self._state.routes:
            if route.port == port:
                return str(route.url)
        raise ValueError(
            f"port {port} is not exposed; create or update the sandbox with ports=[{port}]"
        )

    async def refresh(self) -> AsyncSandbox:
        self._state.update(
            _core.parse(await self._client.send(_core.get_sandbox(self.name)), SandboxResponse)
        )
        return self

    async def _session_call(self, build: Any) -> httpx.Response:
        return await self._client.drive(_core.with_session(self._state, build))

    # -- commands ----------------------------------------------------------------------

    async def run_command(
        self,
        cmd: str,
        args: Iterable[str] = (),
        *,
        cwd: str | None = None,
        env: Mapping[str, str] | None = None,
        sudo: bool = False,
        timeout: _core.Duration | None = None,
        detached: bool = False,
        stdin: bool = False,
        stdout: IO[str] | None = None,
        stderr: IO[str] | None = None,
    ) -> AsyncCommand:
        """Run a command and wait, keeping its output; `detached=True` returns at once."""
        wait = not detached

        def build(sid: str) -> _core.Call:
            return _core.run_call(
                sid, cmd, args, cwd=cwd, env=env, sudo=sudo, timeout=timeout, wait=wait, stdin=stdin
            )

        if detached:
            response = await self._session_call(build)
            return AsyncCommand(self, _core.parse(response, CommandResponse).command)
        output: list[_core.LogLine] = []
        model: CommandModel | None = None
        async for item in self._client.lines(await self._session_call(build)):  # as it comes
            if isinstance(item, _core.LogLine):
                output.append(item)
                sink = stdout if item.stream == "stdout" else stderr
                if sink is not None:
                    sink.write(item.data)
            else:
                model = item
        assert model is not None
        return AsyncCommand(self, model, output)

    async def get_command(self, command_id: str) -> AsyncCommand:
        response = await self._session_call(
            lambda sid: _core.Call("GET", f"/v2/sandboxes/sessions/{sid}/cmd/{command_id}")
        )
        return AsyncCommand(self, _core.parse(response, CommandResponse).command)

    async def list_commands(self) -> builtins.list[AsyncCommand]:
        response = await self._session_call(
            lambda sid: _core.Call("GET", f"/v2/sandboxes/sessions/{sid}/cmd")
        )
        return [AsyncCommand(self, c) for c in _core.parse(response, CommandList).commands]

    # -- files -----------------------------------------------------------------------------

    async def write_files(self, files: _core.Files) -> None:
        """Write `{path: content}` or `(path, content, mode)` items; relative paths: in `cwd`."""
        archive = _requests.archive(files, self.cwd)
        _core.check(await self._session_call(lambda sid: _requests.write(sid, archive)))

    async def write_archive(self, archive: bytes, *, cwd: str = "/") -> None:
        """Extract a tar stream (gzip, bzip2, xz or plain) into directory `cwd`."""
        _core.check(await self._session_call(lambda sid: _requests.write(sid, archive, cwd)))

    async def read_file(self, path: str) -> bytes | None:
        """The file's bytes, or None if it does not exist."""
        response = await self._session_call(lambda sid: _requests.fs(sid, "read", {"path": path}))
        if response.status_code == 404:
            return None
        _core.check(response)
        return response.content

    async def download_file(self, path: str, local_path: str | os.PathLike[str]) -> Path | None:
        """Copy a sandbox file to `local_path`; None if it does not exist."""
        content = await self.read_file(path)
        if content is None:
            return None
        target = Path(local_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)
        return target.resolve()

    async def interactive(self) -> tuple[str, str]:
        """A WebSocket URL and one-time token for a terminal (reference §9.4 protocol)."""
        response = await self._session_call(
            lambda sid: _core.Call("POST", f"/v2/sandboxes/sessions/{sid}/interactive", json={})
        )
        _core.check(response)
        body = response.json()
        return str(body["url"]), str(body["token"])

    async def mk_dir(self, path: str, *, recursive: bool = False) -> None:
        body = {"path": path, "recursive": recursive}
        _core.check(await self._session_call(lambda sid: _requests.fs(sid, "mkdir", body)))

    # -- lifecycle ------------------------------------------------------------------------

    async def stop(self) -> SnapshotModel | None:
        """Stop the running session (blocking); returns the snapshot a persistent sandbox takes."""
        session = self._state.session
        if session is None or not _core.stoppable(session):
            return None
        response = await self._client.send(
            _core.Call("POST", f"/v2/sandboxes/sessions/{session.id}/stop")
        )
        stopped = _core.parse(response, StopResponse)
        self._state.session = stopped.session
        return stopped.snapshot

    async def pause(self) -> AsyncSandbox:
        """Pause the running session with its memory (microVM sandboxes): no
        processes run and its timeout stands still until `resume()`, or until
        any call that needs the session resumes it."""
        response = await self._client.send(_core.pause_or_resume(self._state, "pause"))
        _core.apply_pause_or_resume(self._state, response)
        return self

    async def resume(self) -> AsyncSandbox:
        """Run a paused session again: processes, files and memory as they were."""
        response = await self._client.send(_core.pause_or_resume(self._state, "resume"))
        _core.apply_pause_or_resume(self._state, response)
        return self

    async def extend_timeout(self, duration: _core.Duration) -> Session:
        body = {"duration": _core.ms(duration)}
        response = await self._session_call(
            lambda sid: _core.Call(
                "POST", f"/v2/sandboxes/sessions/{sid}/extend-timeout", json=body
            )
        )
        self._state.session = _core.parse(response, SessionResponse).session
        return self._state.session

    async def snapshot(self, *, expiration: _core.Duration | None = None) -> AsyncSnapshot:
        """Snapshot the filesystem; this stops the session (the next call resumes)."""
        body = _core.drop_none(
            {"expiration": _core.ms(expiration) if expiration is not None else None}
        )
        response = await self._session_call(
            lambda sid: _core.Call("POST", f"/v2/sandboxes/sessions/{sid}/snapshot", json=body)
        )
        model = _core.parse(response, SnapshotResponse).snapshot
        self._state.session = None
        return AsyncSnapshot(model, self._client)

    async def update(self, **options: Any) -> AsyncSandbox:
        response = await self._client.send(
            _core.Call(
                "PATCH", _core.sandbox_path(self.name), json=_requests.update_body(**options)
            )
        )
        self._state.update(_core.parse(response, SandboxResponse))
        return self

    async def delete(self, *, delete_snapshots: bool = False) -> None:
        params = {"deleteOrphanSnapshots": "true" if delete_snapshots else None}
        _core.check(
            await self._client.send(
                _core.Call("DELETE", _core.sandbox_path(self.name), params=params)
            )
        )

    async def fork(
        self, *, name: str | None = None, with_memory: bool = False, **options: Any
    ) -> AsyncSandbox:
        """A new sandbox with this one's configuration, from its current snapshot; with
        `with_memory`, from a copy of its running or paused session's memory and disk
        (microVM sandboxes), processes and all."""
        body = _requests.update_body(**options) | _core.drop_none(
            {"name": name, "withMemory": True if with_memory else None}
        )
        response = await self._client.send(
            _core.Call("POST", _core.sandbox_path(self.name, "/fork"), json=body)
        )
        return AsyncSandbox._from(_core.parse(response, SandboxResponse), self._client, False)

    async def sessions(self) -> AsyncIterator[Session]:
        cursor = None
        while True:
            items, cursor = await self._client.drive(
                _core.pages(_requests.list_sessions(self.name, cursor), "sessions")
            )
            for item in items:
                yield Session.model_validate(item)
            if not cursor:
                return

    async def snapshots(self) -> AsyncIterator[AsyncSnapshot]:
        async for snapshot in AsyncSnapshot.list(sandbox=self.name, client=self._client):
            yield snapshot

    async def __aenter__(self) -> AsyncSandbox:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.delete_on_exit:
            await self.delete()
        else:
            await self.stop()

    def __repr__(self) -> str:
        return f"AsyncSandbox(name={self.name!r}, status={self.status!r})"


class AsyncSnapshot:
    """A saved filesystem of a session."""

    def __init__(self, model: SnapshotModel, client: AsyncClient) -> None:
        self.model = model
        self._client = client

    @property
    def id(self) -> str:
        return self.model.id

    @classmethod
    async def get(cls, snapshot_id: str, *, client: AsyncClient | None = None) -> AsyncSnapshot:
        client = client or default_client()
        response = await client.send(_core.Call("GET", _core.snapshot_path(snapshot_id)))
        return cls(_core.parse(response, SnapshotResponse).snapshot, client)

    @classmethod
    async def list(
        cls, *, sandbox: str | None = None, client: AsyncClient | None = None
    ) -> AsyncIterator[AsyncSnapshot]:
        client = client or default_client()
        cursor = None
        while True:
            items, cursor = await client.drive(
                _core.pages(_requests.list_snapshots(sandbox, cursor), "snapshots")
            )
            for item in items:
                yield cls(SnapshotModel.model_validate(item), client)
            if not cursor:
                return

    async def delete(self) -> None:
        response = await self._client.send(_core.Call("DELETE", _core.snapshot_path(self.id)))
        self.model = _core.parse(response, SnapshotResponse).snapshot

    def __repr__(self) -> str:
        return f"AsyncSnapshot(id={self.id!r}, status={self.model.status!r})"
