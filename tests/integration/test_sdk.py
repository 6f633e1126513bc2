"""The Python SDK against a real emberd, each test once per twin (STYLE.md §2, §8).

The `sdk` fixture is parametrized over the sync and the async SDK and hands the
test a `Twin`: `await sdk(method, *args)` calls a sync method in a thread (so the
event loop stays free) or awaits an async one, and `await sdk.collect(...)`
drains an iterator or async iterator. Sandboxes made through `sdk.create` are
deleted after the test, with their snapshots.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import socket
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from ember.sdk import (
    AsyncClient,
    AsyncCommand,
    AsyncSandbox,
    AsyncSnapshot,
    Client,
    Command,
    EmberConnectionError,
    EmberError,
    LogLine,
    Sandbox,
    Snapshot,
    _async,
    _sync,
)
from ember.sdk._core import tar_gz
from ember.wire.errors import (
    BadRequestError,
    CommandNotFoundError,
    ConflictError,
    FileNotFoundError_,
    InvalidNameError,
    SandboxNotFoundError,
    SnapshotGoneError,
    SnapshotNotFoundError,
    UnauthorizedError,
)

from ..conftest import RUN_PREFIX, Emberd

pytestmark = pytest.mark.integration


def unique(prefix: str = "sdk") -> str:
    return f"{prefix}-{RUN_PREFIX}-{uuid.uuid4().hex[:8]}"


@dataclass
class Twin:
    """One twin of the SDK behind one interface, so each test body is written once."""

    kind: str  # "sync" | "async"
    emberd: Emberd
    client: Any  # Client | AsyncClient
    Client: Any
    Sandbox: Any
    Snapshot: Any
    Command: Any
    module: ModuleType  # _sync or _async, for the default client
    names: list[str] = field(default_factory=list)

    async def __call__(self, method: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        if self.kind == "sync":
            return await asyncio.to_thread(method, *args, **kwargs)
        return await method(*args, **kwargs)

    async def collect(self, items: Any) -> list[Any]:
        """Every item of an Iterator (sync twin) or AsyncIterator (async twin)."""
        if self.kind == "sync":
            return await asyncio.to_thread(list, items)
        return [item async for item in items]

    def track(self, name: str) -> str:
        self.names.append(name)
        return name

    async def create(self, **options: Any) -> Any:
        options.setdefault("name", unique())
        self.track(options["name"])
        return await self(self.Sandbox.create, client=self.client, **options)

    async def close(self, client: Any) -> None:
        await self(client.close)

    @contextlib.asynccontextmanager
    async def using(self, sandbox: Any) -> AsyncIterator[Any]:
        """`with sandbox` or `async with sandbox`, by the twin's own protocol."""
        if self.kind == "async":
            async with sandbox as entered:
                yield entered
            return
        entered = await asyncio.to_thread(sandbox.__enter__)
        try:
            yield entered
        except BaseException as exc:
            await asyncio.to_thread(sandbox.__exit__, type(exc), exc, exc.__traceback__)
            raise
        await asyncio.to_thread(sandbox.__exit__, None, None, None)

    def raw(self) -> httpx.Client:
        """A plain HTTP client, to look at (or change) things behind the SDK's back."""
        return self.emberd.client()

    def remote(self, name: str) -> dict[str, Any]:
        with self.raw() as api:
            response = api.get(f"/v2/sandboxes/{name}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


@pytest.fixture(params=["sync", "async"])
async def sdk(request: pytest.FixtureRequest, emberd: Emberd) -> AsyncIterator[Twin]:
    if request.param == "sync":
        twin = Twin(
            "sync",
            emberd,
            Client(emberd.url, emberd.token),
            Client,
            Sandbox,
            Snapshot,
            Command,
            _sync,
        )
    else:
        twin = Twin(
            "async",
            emberd,
            AsyncClient(emberd.url, emberd.token),
            AsyncClient,
            AsyncSandbox,
            AsyncSnapshot,
            AsyncCommand,
            _async,
        )
    yield twin
    await twin.close(twin.client)
    failures = []
    with emberd.client() as api:
        for name in twin.names:
            response = api.delete(f"/v2/sandboxes/{name}", params={"deleteOrphanSnapshots": "true"})
            if response.status_code not in (200, 404):
                failures.append(f"{name}: {response.status_code} {response.text[:200]}")
    assert not failures, failures


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- creating and finding sandboxes --------------------------------------------------------


async def test_create_with_options(sdk: Twin) -> None:
    name = unique()
    sandbox = await sdk.create(
        name=name,
        ports=[3000, 8080],
        timeout=90,
        vcpus=2,
        env={"GREETING": "hi there"},
        tags={"suite": "sdk"},
        persistent=False,
        network_policy="deny-all",
    )
    assert isinstance(sandbox, sdk.Sandbox)
    assert sandbox.name == name and sandbox.status == "running"
    info = sandbox.info
    assert info.ports == [3000, 8080]
    assert info.timeout == 90_000
    assert info.vcpus == 2 and info.memory == 4096
    assert info.env == {"GREETING": "hi there"}
    assert info.tags == {"suite": "sdk"}
    assert info.persistent is False
    assert info.network_policy is not None and info.network_policy.mode == "deny-all"
    assert sandbox.session is not None
    assert sandbox.session.status == "running" and sandbox.session.timeout == 90_000
    assert sandbox.session.vcpus == 2
    assert sandbox.cwd == "/vercel/sandbox"
    echoed = await sdk(sandbox.run_command, "sh", ["-c", 'echo "$GREETING"'])
    assert await sdk(echoed.stdout) == "hi there\n"
    # The server agrees with what the SDK reports.
    remote = sdk.remote(name)
    assert remote["sandbox"]["timeout"] == 90_000 and remote["sandbox"]["persistent"] is False


async def test_create_takes_a_timedelta_timeout_and_has_defaults(sdk: Twin) -> None:
    sandbox = await sdk.create(timeout=timedelta(minutes=2))
    assert sandbox.info.timeout == 120_000
    assert sandbox.session is not None and sandbox.session.timeout == 120_000
    assert sandbox.info.persistent is True
    assert sandbox.info.ports == []


async def test_domain_of_exposed_ports(sdk: Twin) -> None:
    sandbox = await sdk.create(ports=[3000])
    url = sandbox.domain(3000)
    assert url.startswith(("http://", "https://"))
    routes = sdk.remote(sandbox.name)["routes"]
    assert [r["url"] for r in routes if r["port"] == 3000] == [url]
    with pytest.raises(ValueError, match=r"port 4000 is not exposed.*ports=\[4000\]"):
        sandbox.domain(4000)


async def test_get_with_and_without_resume(sdk: Twin) -> None:
    sandbox = await sdk.create()
    first = sandbox.session.id
    await sdk(sandbox.stop)

    found = await sdk(sdk.Sandbox.get, sandbox.name, client=sdk.client)
    assert isinstance(found, sdk.Sandbox) and found.name == sandbox.name
    assert found.status == "stopped"
    assert found.session is not None
    assert (found.session.id, found.session.status) == (first, "stopped")

    resumed = await sdk(sdk.Sandbox.get, sandbox.name, resume=True, client=sdk.client)
    assert resumed.session is not None
    assert resumed.session.status == "running" and resumed.session.id != first
    assert resumed.status == "running"


async def test_get_or_create(sdk: Twin) -> None:
    existing = await sdk.create(tags={"which": "original"})
    got = await sdk(sdk.Sandbox.get_or_create, existing.name, client=sdk.client, env={"X": "1"})
    assert got.name == existing.name
    assert got.session.id == existing.session.id  # the same running session, not a new one
    assert got.info.tags == {"which": "original"}

    name = sdk.track(unique("goc"))
    made = await sdk(sdk.Sandbox.get_or_create, name, client=sdk.client, env={"X": "1"})
    assert made.name == name and made.status == "running"
    assert made.info.env == {"X": "1"}
    assert sdk.remote(name)["sandbox"]["name"] == name


async def test_list_pages_and_filters(sdk: Twin) -> None:
    tag, other = uuid.uuid4().hex, uuid.uuid4().hex
    prefix = unique("ls")
    tagged = [await sdk.create(name=f"{prefix}-{i}", tags={"suite": tag}) for i in range(3)]
    odd = await sdk.create(name=f"{prefix}-odd", tags={"suite": other})

    listed = await sdk.collect(
        sdk.Sandbox.list(client=sdk.client, page_size=1, tags={"suite": tag})
    )
    assert all(isinstance(s, sdk.Sandbox) for s in listed)
    assert sorted(s.name for s in listed) == sorted(s.name for s in tagged)
    assert all(s.info.tags == {"suite": tag} for s in listed)

    only = await sdk.collect(sdk.Sandbox.list(client=sdk.client, tags={"suite": other}))
    assert [s.name for s in only] == [odd.name]

    by_prefix = await sdk.collect(
        sdk.Sandbox.list(
            client=sdk.client, page_size=2, name_prefix=prefix, sort_by="name", sort_order="asc"
        )
    )
    assert [s.name for s in by_prefix] == sorted(s.name for s in [*tagged, odd])

    everything = await sdk.collect(sdk.Sandbox.list(client=sdk.client, page_size=1))
    names = [s.name for s in everything]
    assert len(names) == len(set(names)), "a sandbox was listed twice across pages"
    assert {s.name for s in [*tagged, odd]} <= set(names)


async def test_update(sdk: Twin) -> None:
    sandbox = await sdk.create(ports=[3000], timeout=60)
    updated = await sdk(
        sandbox.update, ports=[3000, 4000], tags={"stage": "two"}, timeout=timedelta(minutes=3)
    )
    assert updated is sandbox
    assert sandbox.info.ports == [3000, 4000]
    assert sandbox.info.tags == {"stage": "two"}
    assert sandbox.info.timeout == 180_000
    assert sandbox.domain(4000).startswith(("http://", "https://"))
    remote = sdk.remote(sandbox.name)["sandbox"]
    assert remote["ports"] == [3000, 4000] and remote["tags"] == {"stage": "two"}


async def test_fork_copies_files_and_configuration(sdk: Twin) -> None:
    source = await sdk.create(env={"K": "v"}, ports=[8080])
    await sdk(source.write_files, {"state.txt": "one"})
    await sdk(source.stop)  # a fork starts from the source's current snapshot
    fork_name = sdk.track(unique("fork"))
    forked = await sdk(source.fork, name=fork_name, tags={"role": "fork"})
    assert isinstance(forked, sdk.Sandbox)
    assert forked.name == fork_name and forked.name != source.name
    assert forked.info.env == {"K": "v"} and forked.info.ports == [8080]
    assert forked.info.tags == {"role": "fork"}
    assert await sdk(forked.read_file, "state.txt") == b"one"
    await sdk(forked.write_files, {"state.txt": "two"})
    assert await sdk(source.read_file, "state.txt") == b"one"


async def test_refresh(sdk: Twin) -> None:
    sandbox = await sdk.create(tags={"v": "1"})
    with sdk.raw() as api:
        patched = api.patch(f"/v2/sandboxes/{sandbox.name}", json={"tags": {"v": "2"}})
    assert patched.status_code == 200, patched.text
    assert sandbox.info.tags == {"v": "1"}  # not fetched yet
    assert await sdk(sandbox.refresh) is sandbox
    assert sandbox.info.tags == {"v": "2"}


async def test_delete(sdk: Twin) -> None:
    sandbox = await sdk.create()
    kept = await sdk(sandbox.stop)
    await sdk(sandbox.delete)
    with pytest.raises(SandboxNotFoundError) as raised:
        await sdk(sdk.Sandbox.get, sandbox.name, client=sdk.client)
    assert raised.value.status == 404
    with pytest.raises(SandboxNotFoundError):
        await sdk(sandbox.delete)
    # A plain delete keeps the sandbox's snapshots.
    orphan = await sdk(sdk.Snapshot.get, kept.id, client=sdk.client)
    assert orphan.model.status == "created"
    await sdk(orphan.delete)


async def test_delete_with_its_snapshots(sdk: Twin) -> None:
    sandbox = await sdk.create()
    snapshot = await sdk(sandbox.stop)
    await sdk(sandbox.delete, delete_snapshots=True)
    after = await sdk(sdk.Snapshot.get, snapshot.id, client=sdk.client)
    assert after.model.status == "deleted"


async def test_a_deleted_snapshot_is_gone_and_get_or_create_replaces_the_sandbox(
    sdk: Twin,
) -> None:
    sandbox = await sdk.create(tags={"gen": "old"})
    await sdk(sandbox.write_files, {"f": "old"})
    snapshot = await sdk(sandbox.stop)
    await sdk((await sdk(sdk.Snapshot.get, snapshot.id, client=sdk.client)).delete)

    with pytest.raises(SnapshotGoneError) as raised:
        await sdk(sdk.Sandbox.get, sandbox.name, resume=True, client=sdk.client)
    assert raised.value.status == 410 and raised.value.code == "snapshot_not_found"
    with pytest.raises(SnapshotGoneError):
        await sdk(sandbox.read_file, "f")  # resuming fails the same way

    fresh = await sdk(
        sdk.Sandbox.get_or_create, sandbox.name, client=sdk.client, tags={"gen": "new"}
    )
    assert fresh.name == sandbox.name and fresh.status == "running"
    assert fresh.info.tags == {"gen": "new"}
    assert await sdk(fresh.read_file, "f") is None


# -- commands ----------------------------------------------------------------------------


async def test_run_command_waits_and_keeps_output(sdk: Twin) -> None:
    sandbox = await sdk.create()
    script = "echo out; echo err >&2; echo more; exit 3"
    command = await sdk(sandbox.run_command, "sh", ["-c", script])
    assert isinstance(command, sdk.Command)
    assert command.exit_code == 3
    assert await sdk(command.wait) == 3
    assert await sdk(command.stdout) == "out\nmore\n"
    assert await sdk(command.stderr) == "err\n"
    both = await sdk(command.output)
    assert sorted(both.splitlines()) == ["err", "more", "out"]
    chunks = await sdk.collect(command.logs())
    assert all(isinstance(c, LogLine) for c in chunks)
    assert "".join(c.data for c in chunks if c.stream == "stdout") == "out\nmore\n"
    assert command.model.name == "sh" and command.model.args == ["-c", script]


async def test_run_command_options(sdk: Twin) -> None:
    sandbox = await sdk.create(env={"A": "sandbox", "B": "sandbox"})
    in_tmp = await sdk(sandbox.run_command, "pwd", cwd="/tmp")
    assert await sdk(in_tmp.stdout) == "/tmp\n"
    default_cwd = await sdk(sandbox.run_command, "pwd")
    assert await sdk(default_cwd.stdout) == "/vercel/sandbox\n"
    merged = await sdk(sandbox.run_command, "sh", ["-c", "echo $A $B"], env={"B": "command"})
    assert await sdk(merged.stdout) == "sandbox command\n"
    user = await sdk(sandbox.run_command, "id", ["-u"])
    root = await sdk(sandbox.run_command, "id", ["-u"], sudo=True)
    assert await sdk(root.stdout) == "0\n"
    assert await sdk(user.stdout) != "0\n"
    assert root.model.sudo is True


@pytest.mark.parametrize("timeout", [1, 0.5, timedelta(seconds=1)], ids=["int", "float", "td"])
async def test_run_command_timeout_kills(sdk: Twin, timeout: float | timedelta) -> None:
    sandbox = await sdk.create()
    command = await sdk(sandbox.run_command, "sleep", ["100"], timeout=timeout)
    assert command.exit_code == 137


async def test_run_command_writes_to_sinks(sdk: Twin) -> None:
    sandbox = await sdk.create()
    out, err = io.StringIO(), io.StringIO()
    command = await sdk(
        sandbox.run_command,
        "sh",
        ["-c", "for i in 1 2 3; do echo o$i; echo e$i >&2; done"],
        stdout=out,
        stderr=err,
    )
    assert out.getvalue() == "o1\no2\no3\n"
    assert err.getvalue() == "e1\ne2\ne3\n"
    assert await sdk(command.stdout) == out.getvalue()


async def test_detached_command_logs_in_order_and_wait(sdk: Twin) -> None:
    sandbox = await sdk.create()
    script = "for i in 1 2 3 4 5; do echo line$i; sleep 0.05; done; echo done >&2"
    command = await sdk(sandbox.run_command, "sh", ["-c", script], detached=True)
    assert command.exit_code is None
    assert command.model.session_id == sandbox.session.id
    chunks = await sdk.collect(command.logs())
    assert all(isinstance(c, LogLine) for c in chunks)
    stdout = "".join(c.data for c in chunks if c.stream == "stdout")
    assert stdout == "line1\nline2\nline3\nline4\nline5\n"
    assert "".join(c.data for c in chunks if c.stream == "stderr") == "done\n"
    assert await sdk(command.wait) == 0
    assert command.exit_code == 0
    # Logs replay from the start, again.
    again = await sdk.collect(command.logs())
    assert "".join(c.data for c in again if c.stream == "stdout") == stdout
    assert await sdk(command.output, "stdout") == stdout


async def test_detached_output_waits_for_the_end(sdk: Twin) -> None:
    sandbox = await sdk.create()
    command = await sdk(
        sandbox.run_command, "sh", ["-c", "sleep 0.2; echo late; exit 5"], detached=True
    )
    assert await sdk(command.stdout) == "late\n"
    assert command.exit_code == 5


@pytest.mark.parametrize(("signal", "exit_code"), [(9, 137), (15, 143), (None, 143)])
async def test_kill(sdk: Twin, signal: int | None, exit_code: int) -> None:
    sandbox = await sdk.create()
    command = await sdk(sandbox.run_command, "sleep", ["100"], detached=True)
    if signal is None:
        await sdk(command.kill)
    else:
        await sdk(command.kill, signal)
    assert await sdk(command.wait) == exit_code


async def test_write_stdin(sdk: Twin) -> None:
    sandbox = await sdk.create()
    cat = await sdk(sandbox.run_command, "cat", detached=True, stdin=True)
    assert await sdk(cat.write_stdin, "hello\nworld\n") == 12
    assert await sdk(cat.wait) == 0
    assert await sdk(cat.stdout) == "hello\nworld\n"

    counted = await sdk(sandbox.run_command, "wc", ["-c"], detached=True, stdin=True)
    assert await sdk(counted.write_stdin, bytes(range(256))) == 256
    assert (await sdk(counted.stdout)).strip() == "256"


async def test_get_and_list_commands(sdk: Twin) -> None:
    sandbox = await sdk.create()
    first = await sdk(sandbox.run_command, "echo", ["one"])
    second = await sdk(sandbox.run_command, "sleep", ["100"], detached=True)
    got = await sdk(sandbox.get_command, second.id)
    assert got.id == second.id and got.exit_code is None and got.model.name == "sleep"
    listed = await sdk(sandbox.list_commands)
    assert [c.id for c in listed] == [first.id, second.id]
    assert listed[0].exit_code == 0
    await sdk(got.kill, 9)
    assert await sdk(got.wait) == 137
    with pytest.raises(CommandNotFoundError) as raised:
        await sdk(sandbox.get_command, "cmd_nope")
    assert raised.value.status == 404


# -- files -------------------------------------------------------------------------------


async def test_write_and_read_files(sdk: Twin) -> None:
    sandbox = await sdk.create()
    every_byte = bytes(range(256))
    await sdk(
        sandbox.write_files,
        {"notes.txt": "héllo", "/tmp/abs.txt": b"absolute", "data/every.bin": every_byte},
    )
    assert await sdk(sandbox.read_file, "notes.txt") == "héllo".encode()
    assert await sdk(sandbox.read_file, "/vercel/sandbox/notes.txt") == "héllo".encode()
    assert await sdk(sandbox.read_file, "/tmp/abs.txt") == b"absolute"
    assert await sdk(sandbox.read_file, "data/every.bin") == every_byte
    assert await sdk(sandbox.read_file, "missing.txt") is None

    await sdk(
        sandbox.write_files,
        [("bin/run.sh", "#!/bin/sh\necho ran\n", 0o755), ("secret", b"s3", 0o600)],
    )
    ran = await sdk(sandbox.run_command, "./bin/run.sh")
    assert await sdk(ran.stdout) == "ran\n"
    stat = await sdk(sandbox.fs.stat, "bin/run.sh")
    assert stat.mode & 0o777 == 0o755 and stat.type == "file"
    assert (await sdk(sandbox.fs.stat, "secret")).mode & 0o777 == 0o600
    # The files belong to the sandbox's user, who can read them.
    cat = await sdk(sandbox.run_command, "cat", ["secret", "notes.txt"])
    assert await sdk(cat.stdout) == "s3héllo"


async def test_write_archive(sdk: Twin) -> None:
    sandbox = await sdk.create()
    await sdk(sandbox.write_archive, tar_gz([("inner/a.txt", "from a tar", 0o644)]), cwd="/tmp")
    assert await sdk(sandbox.read_file, "/tmp/inner/a.txt") == b"from a tar"


async def test_download_file(sdk: Twin, tmp_path: Path) -> None:
    sandbox = await sdk.create()
    every_byte = bytes(range(256))
    await sdk(sandbox.write_files, {"every.bin": every_byte})
    target = tmp_path / "nested" / "dir" / "every.bin"
    written = await sdk(sandbox.download_file, "every.bin", target)
    assert written == target.resolve()
    assert target.read_bytes() == every_byte
    missing = tmp_path / "missing.bin"
    assert await sdk(sandbox.download_file, "nope.bin", str(missing)) is None
    assert not missing.exists()


async def test_mk_dir(sdk: Twin) -> None:
    sandbox = await sdk.create()
    await sdk(sandbox.mk_dir, "a/b/c", recursive=True)
    assert (await sdk(sandbox.fs.stat, "a/b/c")).type == "directory"
    await sdk(sandbox.mk_dir, "single")
    assert (await sdk(sandbox.fs.stat, "single")).type == "directory"
    with pytest.raises(ConflictError):
        await sdk(sandbox.mk_dir, "single")
    with pytest.raises(FileNotFoundError_) as raised:
        await sdk(sandbox.mk_dir, "no/such/parent")
    assert raised.value.status == 404
    assert not await sdk(sandbox.fs.exists, "no")


async def test_filesystem_operations(sdk: Twin) -> None:
    sandbox = await sdk.create()
    await sdk(sandbox.write_files, {"keep.txt": "k", "dir/inner.txt": "12345"})
    fs = sandbox.fs
    assert await sdk(fs.exists, "keep.txt") is True
    assert await sdk(fs.exists, "dir") is True
    assert await sdk(fs.exists, "nope.txt") is False

    stat = await sdk(fs.stat, "dir/inner.txt")
    assert (stat.name, stat.type, stat.size) == ("inner.txt", "file", 5)
    assert (await sdk(fs.stat, "dir")).type == "directory"
    with pytest.raises(FileNotFoundError_) as raised:
        await sdk(fs.stat, "nope.txt")
    assert raised.value.status == 404

    names = [entry.name for entry in await sdk(fs.listdir)]
    assert {"keep.txt", "dir"} <= set(names)
    assert [entry.name for entry in await sdk(fs.listdir, "dir")] == ["inner.txt"]

    await sdk(fs.rename, "keep.txt", "dir/moved.txt")
    assert await sdk(fs.exists, "keep.txt") is False
    assert await sdk(sandbox.read_file, "dir/moved.txt") == b"k"

    await sdk(fs.remove, "dir/moved.txt")
    assert await sdk(fs.exists, "dir/moved.txt") is False
    with pytest.raises(ConflictError):
        await sdk(fs.remove, "dir")  # not empty, not recursive
    assert await sdk(fs.exists, "dir/inner.txt") is True
    await sdk(fs.remove, "dir", recursive=True)
    assert await sdk(fs.exists, "dir") is False


# -- stopping, resuming, snapshots ---------------------------------------------------------


async def test_stop_returns_the_snapshot_and_the_next_call_resumes(sdk: Twin) -> None:
    sandbox = await sdk.create(persistent=True)
    await sdk(sandbox.write_files, {"state.txt": "kept"})
    first = sandbox.session.id

    snapshot = await sdk(sandbox.stop)
    assert snapshot is not None
    assert snapshot.status == "created" and snapshot.source_session_id == first
    assert sandbox.session.status == "stopped"
    assert sdk.remote(sandbox.name)["sandbox"]["currentSnapshotId"] == snapshot.id
    assert await sdk(sandbox.stop) is None  # already stopped: nothing to do

    command = await sdk(sandbox.run_command, "cat", ["state.txt"])
    assert await sdk(command.stdout) == "kept"
    assert sandbox.session.id != first and sandbox.session.status == "running"
    assert sandbox.session.source_snapshot_id == snapshot.id


async def test_stopping_a_non_persistent_sandbox_takes_no_snapshot(sdk: Twin) -> None:
    sandbox = await sdk.create(persistent=False)
    await sdk(sandbox.write_files, {"scratch.txt": "gone"})
    assert await sdk(sandbox.stop) is None
    assert sandbox.session.status == "stopped"
    assert await sdk(sandbox.read_file, "scratch.txt") is None  # resumed, clean


async def test_resumes_when_stopped_behind_its_back(sdk: Twin) -> None:
    sandbox = await sdk.create()
    await sdk(sandbox.write_files, {"state.txt": "survives"})
    for attempt in range(2):
        before = sandbox.session.id
        with sdk.raw() as api:
            stopped = api.post(f"/v2/sandboxes/sessions/{before}/stop")
        assert stopped.status_code == 200, stopped.text
        assert sandbox.session.status == "running"  # the SDK has not noticed
        if attempt == 0:  # a plain JSON call
            assert await sdk(sandbox.read_file, "state.txt") == b"survives"
        else:  # a streamed command
            command = await sdk(sandbox.run_command, "cat", ["state.txt"])
            assert await sdk(command.stdout) == "survives"
        assert sandbox.session.id != before and sandbox.session.status == "running"
        assert sdk.remote(sandbox.name)["sandbox"]["currentSessionId"] == sandbox.session.id


async def test_extend_timeout(sdk: Twin) -> None:
    sandbox = await sdk.create(timeout=60)
    session = await sdk(sandbox.extend_timeout, 30)
    assert session.timeout == 90_000 and sandbox.session.timeout == 90_000
    session = await sdk(sandbox.extend_timeout, timedelta(seconds=15))
    assert session.timeout == 105_000
    with sdk.raw() as api:
        remote = api.get(f"/v2/sandboxes/sessions/{session.id}").json()["session"]
    assert remote["timeout"] == 105_000


async def test_snapshot_then_create_from_it(sdk: Twin) -> None:
    sandbox = await sdk.create(persistent=False)
    await sdk(sandbox.write_files, {"seed.txt": "seed"})
    first = sandbox.session.id
    snapshot = await sdk(sandbox.snapshot, expiration=timedelta(days=1))
    assert isinstance(snapshot, sdk.Snapshot)
    assert snapshot.model.creation_method == "snapshot"
    assert snapshot.model.source_session_id == first
    assert snapshot.model.expires_at is not None
    assert snapshot.model.expires_at - snapshot.model.created_at == 86_400_000
    assert sdk.remote(sandbox.name)["sandbox"]["status"] != "running"  # snapshotting stops

    child = await sdk.create(source_snapshot=snapshot.id)
    assert await sdk(child.read_file, "seed.txt") == b"seed"
    # The source resumes on its next call.
    assert await sdk(sandbox.read_file, "seed.txt") is None  # non-persistent: fresh start
    assert sandbox.session.id != first

    forever = await sdk(sandbox.snapshot, expiration=0)
    assert forever.model.expires_at is None
    with pytest.raises(BadRequestError, match="expiration"):
        await sdk(sandbox.snapshot, expiration=3600)  # under a day: refused, session kept
    assert await sdk(sandbox.read_file, "seed.txt") is None


async def test_sessions_and_snapshots_listings(sdk: Twin) -> None:
    sandbox = await sdk.create(persistent=True)
    first = sandbox.session.id
    on_stop = await sdk(sandbox.stop)
    await sdk(sandbox.write_files, {"x": "y"})  # resumes
    second = sandbox.session.id
    explicit = await sdk(sandbox.snapshot)

    sessions = await sdk.collect(sandbox.sessions())
    assert {s.id for s in sessions} == {first, second}
    assert all(s.sandbox_name == sandbox.name for s in sessions)

    snapshots = await sdk.collect(sandbox.snapshots())
    assert all(isinstance(s, sdk.Snapshot) for s in snapshots)
    assert {s.id for s in snapshots} == {on_stop.id, explicit.id}
    listed = await sdk.collect(sdk.Snapshot.list(sandbox=sandbox.name, client=sdk.client))
    assert {s.id for s in listed} == {on_stop.id, explicit.id}
    everything = await sdk.collect(sdk.Snapshot.list(client=sdk.client))
    assert {on_stop.id, explicit.id} <= {s.id for s in everything}


async def test_snapshot_get_and_delete(sdk: Twin) -> None:
    sandbox = await sdk.create(persistent=False)
    await sdk(sandbox.write_files, {"f": "1"})
    snapshot = await sdk(sandbox.snapshot)
    got = await sdk(sdk.Snapshot.get, snapshot.id, client=sdk.client)
    assert isinstance(got, sdk.Snapshot)
    assert got.id == snapshot.id and got.model.status == "created"
    assert got.model.sandbox_name == sandbox.name

    await sdk(got.delete)
    assert got.model.status == "deleted"
    again = await sdk(sdk.Snapshot.get, snapshot.id, client=sdk.client)
    assert again.model.status == "deleted"
    listed = await sdk.collect(sandbox.snapshots())
    assert [(s.id, s.model.status) for s in listed] == [(snapshot.id, "deleted")]
    with pytest.raises(SnapshotNotFoundError):
        await sdk(
            sdk.Sandbox.create,
            client=sdk.client,
            name=sdk.track(unique()),
            source_snapshot=snapshot.id,
        )
    with pytest.raises(SnapshotNotFoundError) as raised:
        await sdk(sdk.Snapshot.get, "snap_does_not_exist", client=sdk.client)
    assert raised.value.status == 404


# -- context managers ----------------------------------------------------------------------


async def test_leaving_the_block_stops_the_sandbox(sdk: Twin) -> None:
    sandbox = await sdk.create()
    async with sdk.using(sandbox) as entered:
        assert entered is sandbox
        await sdk(entered.write_files, {"f": "1"})
    session_id = sandbox.session.id
    with sdk.raw() as api:
        session = api.get(f"/v2/sandboxes/sessions/{session_id}").json()["session"]
    assert session["status"] == "stopped"
    assert sdk.remote(sandbox.name)["sandbox"]["name"] == sandbox.name  # still there


async def test_leaving_the_block_on_an_error_stops_and_re_raises(sdk: Twin) -> None:
    sandbox = await sdk.create()
    with pytest.raises(RuntimeError, match="inside"):
        async with sdk.using(sandbox):
            raise RuntimeError("inside")
    assert sandbox.session.status == "stopped"


async def test_delete_on_exit(sdk: Twin) -> None:
    sandbox = await sdk.create(delete_on_exit=True)
    assert sandbox.delete_on_exit is True
    async with sdk.using(sandbox):
        await sdk(sandbox.run_command, "true")
    with sdk.raw() as api:
        assert api.get(f"/v2/sandboxes/{sandbox.name}").status_code == 404


# -- errors and configuration --------------------------------------------------------------


async def test_typed_errors(sdk: Twin) -> None:
    with pytest.raises(SandboxNotFoundError) as missing:
        await sdk(sdk.Sandbox.get, unique("missing"), client=sdk.client)
    assert missing.value.status == 404 and missing.value.code == "sandbox_not_found"
    assert isinstance(missing.value, EmberError)

    with pytest.raises(InvalidNameError) as bad_get:
        await sdk(sdk.Sandbox.get, "not a valid name!", client=sdk.client)
    assert bad_get.value.status is None  # refused before any request: it would name another path
    with pytest.raises(InvalidNameError):
        await sdk(sdk.Sandbox.create, client=sdk.client, name="not a valid name!")
    with pytest.raises(InvalidNameError):
        await sdk(sdk.Sandbox.get_or_create, "bad/name", client=sdk.client)


async def test_a_wrong_token_is_unauthorized(sdk: Twin) -> None:
    client = sdk.Client(sdk.emberd.url, "ember_wrong")
    try:
        with pytest.raises(UnauthorizedError) as raised:
            await sdk(sdk.Sandbox.get, "anything", client=client)
        assert raised.value.status == 401
    finally:
        await sdk.close(client)


async def test_explicit_url_and_token(sdk: Twin) -> None:
    client = sdk.Client(sdk.emberd.url + "/", sdk.emberd.token)
    try:
        assert client.config.url == sdk.emberd.url and client.config.token == sdk.emberd.token
        sandbox = await sdk.create()
        found = await sdk(sdk.Sandbox.get, sandbox.name, client=client)
        assert found.name == sandbox.name
    finally:
        await sdk.close(client)


async def test_url_and_token_from_the_environment(
    sdk: Twin, monkeypatch: pytest.MonkeyPatch
) -> None:
    sandbox = await sdk.create()
    monkeypatch.setenv("EMBER_URL", sdk.emberd.url)
    monkeypatch.setenv("EMBER_TOKEN", sdk.emberd.token)
    client = sdk.Client()
    try:
        assert client.config.url == sdk.emberd.url
        found = await sdk(sdk.Sandbox.get, sandbox.name, client=client)
        assert found.name == sandbox.name
    finally:
        await sdk.close(client)

    # Without a client argument, the module's default client is made the same way.
    monkeypatch.setattr(sdk.module, "_default", None)
    found = await sdk(sdk.Sandbox.get, sandbox.name)
    default = sdk.module._default
    assert default is not None and found._client is default
    await sdk.close(default)


async def test_nothing_listening_is_a_connection_error(sdk: Twin) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    client = sdk.Client(url, "ember_any")
    try:
        with pytest.raises(EmberConnectionError) as raised:
            await sdk(sdk.Sandbox.get, "anything", client=client)
        assert "ember serve" in str(raised.value) and url in str(raised.value)
        assert isinstance(raised.value.__cause__, httpx.TransportError)
        with pytest.raises(EmberConnectionError):
            await sdk.collect(sdk.Sandbox.list(client=client))
    finally:
        await sdk.close(client)


async def test_interactive_gives_a_websocket_url_and_token(sdk: Twin) -> None:
    sandbox = await sdk.create()
    url, token = await sdk(sandbox.interactive)
    assert url.startswith(("ws://", "wss://")) and token
