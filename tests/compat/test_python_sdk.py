"""Vercel's official Python SDK (`vercel-sandbox` 0.10.0), unmodified, against a real emberd.

The SDK is pointed at emberd with its public `SandboxServiceOptions(base_url=...,
credentials_factory=...)`; nothing else is configured.
"""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest

from ..conftest import Emberd
from .conftest import unique_name

try:
    from vercel.sandbox import SandboxClient
    from vercel.sandbox import SandboxCredentials as AsyncCredentials
    from vercel.sandbox import SandboxServiceOptions as AsyncOptions
    from vercel.sandbox.sync import (
        NetworkPolicy,
        SandboxApiError,
        SandboxCredentials,
        SandboxPathNotFoundError,
        SandboxQueryByCreatedAt,
        SandboxQueryByName,
        SandboxServiceOptions,
        SandboxStatus,
        SnapshotSource,
        SyncSandboxClient,
        TagFilter,
    )
except ImportError:  # pragma: no cover - only without the `compat` extra
    if os.environ.get("CI"):
        raise
    pytest.skip(
        "vercel-sandbox is not installed: pip install -e '.[compat]'", allow_module_level=True
    )

pytestmark = pytest.mark.integration


@pytest.fixture
def client(server: Emberd) -> Iterator[SyncSandboxClient]:
    options = SandboxServiceOptions(
        base_url=server.url,
        credentials_factory=lambda: SandboxCredentials(
            token=server.token, team_id=server.team_id, project_id=server.project_id
        ),
    )
    sdk = SyncSandboxClient.create(options=options)
    yield sdk
    sdk.close()


def test_create_with_tags_env_and_ports(
    client: SyncSandboxClient, api: httpx.Client, names: list[str]
) -> None:
    name = unique_name("py-create")
    names.append(name)
    with client.create_sandbox(
        name=name,
        tags={"suite": "compat", "client": "python"},
        env={"GREETING": "hello from env"},
        ports=[3000, 8080],
        persistent=True,
        execution_time_limit=timedelta(minutes=2),
    ) as sandbox:
        assert sandbox.name == name
        assert sandbox.status == SandboxStatus.RUNNING
        assert sandbox.persistent is True
        assert sandbox.tags == {"suite": "compat", "client": "python"}
        assert sorted(route.port for route in sandbox.routes) == [3000, 8080]
        assert all(route.subdomain and route.url for route in sandbox.routes)
        session = sandbox.current_session
        assert session is not None and session.status == SandboxStatus.RUNNING
        assert session.execution_time_limit == timedelta(minutes=2)
        assert sandbox.current_session_id == session.id

        result = sandbox.run_process("sh", ["-c", 'echo "$GREETING"'], capture_output=True)
        assert (result.returncode, result.stdout) == (0, "hello from env\n")

        # What emberd holds is what the SDK sent.
        stored = api.get(f"/v2/sandboxes/{name}").json()["sandbox"]
        assert stored["tags"] == {"suite": "compat", "client": "python"}
        assert stored["env"] == {"GREETING": "hello from env"}
        assert stored["ports"] == [3000, 8080]
    # Leaving the block stops the sandbox and destroys it with its snapshots.
    assert api.get(f"/v2/sandboxes/{name}").status_code == 404


def test_processes_blocking_and_detached(client: SyncSandboxClient, names: list[str]) -> None:
    name = unique_name("py-proc")
    names.append(name)
    with client.create_sandbox(name=name) as sandbox:
        result = sandbox.run_process(
            "sh", ["-c", "echo out; echo err >&2; exit 3"], capture_output=True
        )
        assert (result.returncode, result.stdout, result.stderr) == (3, "out\n", "err\n")
        assert result.args == ("sh", "-c", "echo out; echo err >&2; exit 3")
        assert result.session_id == sandbox.current_session_id

        with pytest.raises(subprocess.CalledProcessError) as failed:
            sandbox.run_process("false", check=True, capture_output=True)
        assert failed.value.returncode == 1

        in_dir = sandbox.run_process(
            "sh", ["-c", 'pwd; echo "$EXTRA"'], cwd="/tmp", env={"EXTRA": "x"}, capture_output=True
        )
        assert in_dir.stdout == "/tmp\nx\n"

        streamed = io.StringIO()
        sandbox.run_process("sh", ["-c", "echo a; echo b"], stdout=streamed, stderr=streamed)
        assert streamed.getvalue() == "a\nb\n"

        # Detached: the log stream is read line by line while the process runs.
        process = sandbox.create_process(
            "sh", ["-c", "for i in 1 2 3; do echo line$i; sleep 0.2; done; echo done >&2; exit 4"]
        )
        assert process.returncode is None
        assert process.stdout is not None and process.stderr is not None
        assert [process.stdout.readline() for _ in range(3)] == ["line1\n", "line2\n", "line3\n"]
        assert process.wait() == 4
        assert process.stderr.read() == "done\n"
        assert process.stdout.read() == ""

        again = sandbox.get_process(process.id)
        assert (again.id, again.returncode, again.name) == (process.id, 4, "sh")
        assert process.id in {p.id for p in sandbox.query_processes()}

        sleeper = sandbox.create_process("sleep", ["600"])
        sleeper.terminate()
        assert sleeper.wait() == 128 + 15
        killed = sandbox.create_process("sleep", ["600"])
        killed.kill()
        assert killed.wait() == 128 + 9


def test_process_stdin(client: SyncSandboxClient, names: list[str]) -> None:
    name = unique_name("py-stdin")
    names.append(name)
    with client.create_sandbox(name=name) as sandbox:
        piped = sandbox.run_process("cat", input="from stdin", capture_output=True)
        assert piped.stdout == "from stdin"
        process = sandbox.create_process("cat", stdin=subprocess.PIPE)
        out, _ = process.communicate(b"through a pipe")
        assert out == "through a pipe"


def test_files(client: SyncSandboxClient, names: list[str]) -> None:
    name = unique_name("py-fs")
    names.append(name)
    with client.create_sandbox(name=name) as sandbox:
        sandbox.fs.write_text("/tmp/compat/deep/a.txt", "text\n")
        sandbox.fs.write_bytes("relative.bin", bytes(range(256)), mode=0o640)
        with sandbox.fs.batch(cwd="/tmp/batch") as batch:
            batch.write_text("one.txt", "1")
            batch.write_bytes("two.bin", b"\x00\x02")

        assert sandbox.fs.read_text("/tmp/compat/deep/a.txt") == "text\n"
        assert sandbox.fs.read_text("a.txt", cwd="/tmp/compat/deep") == "text\n"
        assert sandbox.fs.read_bytes("/vercel/sandbox/relative.bin") == bytes(range(256))
        assert sandbox.fs.read_text("/tmp/batch/one.txt") == "1"
        assert sandbox.fs.read_bytes("/tmp/batch/two.bin") == b"\x00\x02"
        mode = sandbox.run_process("stat", ["-c", "%a", "relative.bin"], capture_output=True)
        assert mode.stdout == "640\n"

        sandbox.fs.mkdir("/tmp/made/by/mkdir")  # recursive by default
        assert sandbox.fs.is_dir("/tmp/made/by/mkdir")
        assert not sandbox.fs.is_file("/tmp/made/by/mkdir")
        sandbox.fs.mkdir("/tmp/made/single", recursive=False)
        assert sandbox.fs.exists("/tmp/made/single")
        with pytest.raises(SandboxPathNotFoundError):
            sandbox.fs.mkdir("/tmp/no/parent", recursive=False)

        with pytest.raises(SandboxPathNotFoundError):
            sandbox.fs.read_text("/tmp/compat/missing.txt")
        assert not sandbox.fs.exists("/tmp/compat/missing.txt")
        entries = sandbox.fs.listdir("/tmp/batch")
        assert sorted((e.path, e.kind) for e in entries) == [
            ("one.txt", "file"),
            ("two.bin", "file"),
        ]


def test_stop_and_resume_keep_a_persistent_sandbox(
    client: SyncSandboxClient, api: httpx.Client, names: list[str]
) -> None:
    name = unique_name("py-resume")
    names.append(name)
    with client.create_sandbox(name=name, persistent=True) as sandbox:
        first_session = sandbox.current_session_id
        sandbox.fs.write_text("/vercel/sandbox/state.txt", "kept")
        sandbox.stop()
        assert sandbox.status == SandboxStatus.STOPPED
        assert api.get(f"/v2/sandboxes/{name}").json()["sandbox"]["status"] == "stopped"

        # A fresh handle of the stopped sandbox: the SDK resumes it on the first call that
        # needs a session (emberd answers 410 for the ended one).
        fetched = client.get_sandbox(name=name)
        assert fetched.status == SandboxStatus.STOPPED
        assert fetched.current_session_id == first_session
        assert fetched.fs.read_text("/vercel/sandbox/state.txt") == "kept"
        assert fetched.status == SandboxStatus.RUNNING
        assert fetched.current_session_id != first_session
        listing = fetched.run_process("cat", ["state.txt"], capture_output=True)
        assert listing.stdout == "kept"

        fetched.stop()
        resumed = client.resume_sandbox(name=name)
        assert resumed.status == SandboxStatus.RUNNING
        assert resumed.current_session_id not in (first_session, fetched.current_session_id)
        assert resumed.fs.read_text("/vercel/sandbox/state.txt") == "kept"
        sessions = resumed.list_sessions()
        assert len(sessions) == 3
        assert {s.id for s in sessions} >= {first_session, resumed.current_session_id}


def test_get_or_create(client: SyncSandboxClient, api: httpx.Client, names: list[str]) -> None:
    name = unique_name("py-goc")
    names.append(name)
    first, created = client.get_or_create_sandbox(name=name, tags={"flow": "goc"})
    assert created is True and first.name == name and first.status == SandboxStatus.RUNNING
    first.fs.write_text("marker.txt", "first")
    second, created_again = client.get_or_create_sandbox(name=name, tags={"flow": "goc"})
    assert created_again is False
    assert second.name == name and second.current_session_id == first.current_session_id
    assert second.fs.read_text("marker.txt") == "first"
    second.destroy(delete_orphan_snapshots=True)
    assert api.get(f"/v2/sandboxes/{name}").status_code == 404


def test_list_with_a_tag_filter(client: SyncSandboxClient, names: list[str]) -> None:
    prefix = unique_name("py-list")
    red, blue = f"{prefix}-red", f"{prefix}-blue"
    names.extend([red, blue])
    with (
        client.create_sandbox(name=red, tags={"color": "red"}),
        client.create_sandbox(name=blue, tags={"color": "blue"}),
    ):

        def mine(query: SandboxQueryByCreatedAt | SandboxQueryByName) -> list[str]:
            return sorted(
                s.name for s in client.query_sandboxes(query=query) if s.name.startswith(prefix)
            )

        assert mine(SandboxQueryByCreatedAt(tag=TagFilter(key="color", value="red"))) == [red]
        assert mine(SandboxQueryByCreatedAt(tag=TagFilter(key="color", value="blue"))) == [blue]
        assert mine(SandboxQueryByName(name_prefix=prefix)) == sorted([red, blue])
        assert mine(
            SandboxQueryByName(name_prefix=prefix, tag=TagFilter(key="color", value="red"))
        ) == [red]
        paged = [
            s.name
            for s in client.query_sandboxes(
                query=SandboxQueryByName(name_prefix=prefix, sort_order="asc"), page_size=1
            )
        ]
        assert paged == sorted([red, blue])


def test_snapshots(client: SyncSandboxClient, api: httpx.Client, names: list[str]) -> None:
    name, restored_name = unique_name("py-snap"), unique_name("py-restored")
    names.extend([name, restored_name])
    with client.create_sandbox(name=name, persistent=True) as sandbox:
        session_id = sandbox.current_session_id
        sandbox.fs.write_text("/vercel/sandbox/snap.txt", "in the snapshot")
        snapshot = sandbox.snapshot(expiration=timedelta(days=2))
        assert snapshot.id.startswith("snap_")
        assert snapshot.status == "created"
        assert snapshot.source_session_id == session_id
        assert snapshot.size_bytes > 0
        assert snapshot.expires_at is not None
        # Taking a snapshot ends the session.
        assert (
            api.get(f"/v2/sandboxes/sessions/{session_id}").json()["session"]["status"] == "stopped"
        )

        assert snapshot.id in {s.id for s in client.query_snapshots(name=name)}
        assert snapshot.id in {s.id for s in sandbox.list_snapshots()}
        fetched = client.get_snapshot(snapshot_id=snapshot.id)
        assert (fetched.id, fetched.status, fetched.source_session_id) == (
            snapshot.id,
            "created",
            session_id,
        )

        with client.create_sandbox(
            name=restored_name, source=SnapshotSource(snapshot_id=snapshot.id)
        ) as restored:
            assert restored.fs.read_text("/vercel/sandbox/snap.txt") == "in the snapshot"

        deleted = fetched.delete()
        assert deleted.status == "deleted"
        assert client.get_snapshot(snapshot_id=snapshot.id).status == "deleted"
        with pytest.raises(SandboxApiError) as gone:
            client.create_sandbox(
                name=unique_name("py-gone"), source=SnapshotSource(snapshot_id=snapshot.id)
            )
        assert gone.value.status_code in (404, 410)


def test_extend_timeout(client: SyncSandboxClient, api: httpx.Client, names: list[str]) -> None:
    name = unique_name("py-extend")
    names.append(name)
    with client.create_sandbox(name=name, execution_time_limit=timedelta(minutes=2)) as sandbox:
        session = sandbox.extend_execution_time_limit(timedelta(minutes=1))
        assert session.execution_time_limit == timedelta(minutes=3)
        assert sandbox.current_session is not None
        assert sandbox.current_session.execution_time_limit == timedelta(minutes=3)
        stored = api.get(f"/v2/sandboxes/sessions/{session.id}").json()["session"]
        assert stored["timeout"] == 180_000


def test_network_policy_on_create_and_while_stopped(
    client: SyncSandboxClient, api: httpx.Client, names: list[str]
) -> None:
    name = unique_name("py-net")
    names.append(name)
    with client.create_sandbox(name=name, network_policy=NetworkPolicy.deny_all()) as sandbox:
        assert sandbox.network_policy is not None
        assert sandbox.network_policy.mode == "deny-all"
        sandbox.stop()
        sandbox.update(
            network_policy=NetworkPolicy.custom(allow={"example.com": []}), tags={"net": "custom"}
        )
        assert sandbox.network_policy is not None
        assert sandbox.network_policy.mode == "custom"
        assert sandbox.network_policy.allowed_domains == ("example.com",)
        assert sandbox.tags == {"net": "custom"}
        stored = api.get(f"/v2/sandboxes/{name}").json()["sandbox"]["networkPolicy"]
        assert stored["mode"] == "custom" and stored["allowedDomains"] == ["example.com"]


@pytest.mark.networked
def test_network_policy_update_while_running(client: SyncSandboxClient, names: list[str]) -> None:
    name = unique_name("py-net-live")
    names.append(name)
    with client.create_sandbox(name=name, network_policy=NetworkPolicy.deny_all()) as sandbox:
        sandbox.update(network_policy=NetworkPolicy.allow_all())
        assert sandbox.network_policy is not None
        assert sandbox.network_policy.mode == "allow-all"


def test_fork(client: SyncSandboxClient, names: list[str]) -> None:
    name = unique_name("py-fork-src")
    fork_name = unique_name("py-fork")
    names.extend([name, fork_name])
    with client.create_sandbox(name=name, persistent=True, tags={"origin": "source"}) as source:
        source.fs.write_text("/vercel/sandbox/shared.txt", "from the source")
        source.stop()  # persistent: the stop's snapshot is what a fork starts from
        with client.fork_sandbox(source_sandbox=name, name=fork_name) as fork:
            assert fork.name == fork_name and fork.status == SandboxStatus.RUNNING
            assert fork.tags == {"origin": "source"}
            assert fork.fs.read_text("/vercel/sandbox/shared.txt") == "from the source"
            fork.fs.write_text("/vercel/sandbox/shared.txt", "changed in the fork")
        assert source.fs.read_text("/vercel/sandbox/shared.txt") == "from the source"


def test_interactive_terminal(client: SyncSandboxClient, names: list[str]) -> None:
    # The SDK first probes https://<host:port>/health; a plain-HTTP emberd fails the probe and
    # the SDK goes on to the WebSocket anyway (behind TLS the probe succeeds).
    name = unique_name("py-pty")
    names.append(name)
    with client.create_sandbox(name=name) as sandbox:
        with sandbox.open_interactive("sh", cols=80, rows=24, env={"WHO": "pty"}) as terminal:
            terminal.stream.write(b'test -t 0 && echo "tty-$WHO-$((40 + 2))"; exit 3\n')
            screen = b""
            while chunk := terminal.stream.read(4096):
                screen += chunk
            assert terminal.wait() == 3
        assert b"tty-pty-42" in screen, screen


async def test_async_client(emberd: Emberd, names: list[str]) -> None:
    async def credentials() -> AsyncCredentials:
        return AsyncCredentials(
            token=emberd.token, team_id=emberd.team_id, project_id=emberd.project_id
        )

    client = SandboxClient.create(
        options=AsyncOptions(base_url=emberd.url, credentials_factory=credentials)
    )
    name = unique_name("py-async")
    names.append(name)
    try:
        async with client.create_sandbox(name=name, tags={"client": "async"}) as sandbox:
            assert sandbox.name == name and sandbox.tags == {"client": "async"}
            await sandbox.fs.write_text("async.txt", "written async")
            result = await sandbox.run_process("cat", ["async.txt"], capture_output=True)
            assert (result.returncode, result.stdout) == (0, "written async")
            assert await sandbox.fs.read_text("/vercel/sandbox/async.txt") == "written async"
    finally:
        await client.aclose()
