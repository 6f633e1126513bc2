"""What every runtime does, end to end: each test runs on real runc containers
and on real QEMU microVMs (`start_any`, `any_runtime`). Container-only and
microVM-only behaviour lives in test_container_*.py / test_limits.py and
test_microvm.py."""

from __future__ import annotations

import asyncio
import hashlib
import io
import os
import signal
import tarfile
from collections.abc import AsyncIterator

import pytest

from ember.runtime import AgentError, OutputChunk, SessionSpec, SessionStatus
from ember.runtime.container import ContainerRuntime, default_id_shift
from ember.runtime.microvm import MicroVmRuntime
from ember.snapshots import LayerStore

from ..conftest import DATA_DIR, TestSession, new_layer_id

pytestmark = pytest.mark.integration


async def chunks_of(data: bytes, size: int = 1 << 20) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


def tar_of(files: dict[str, bytes], *, mode: int = 0o644, compression: str = "") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=f"w:{compression}") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(content), mode
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


async def write(session: TestSession, path: str, content: bytes, *, root: str = "/") -> None:
    await session.agent.write_tar(root, chunks_of(tar_of({path.lstrip("/"): content})))


# -- commands ---------------------------------------------------------------


async def test_session_starts_as_the_sandbox_user_in_its_workdir(start_any) -> None:
    session = await start_any()
    hello = await session.agent.hello()
    assert hello["user"] == "vercel-sandbox" and hello["workdir"] == "/vercel/sandbox"
    result = await session.sh("id -u; id -g; pwd; echo $HOME")
    assert result.exit_code == 0
    assert result.stdout.decode().split() == [
        "1000",
        "1000",
        "/vercel/sandbox",
        "/home/vercel-sandbox",
    ]
    info = await session.runtime.info(session.session_id)
    assert info.status is SessionStatus.RUNNING and info.cwd == "/vercel/sandbox"


async def test_root_commands_and_environment(start_any) -> None:
    session = await start_any()
    result = await session.sh(
        'id -u; echo "$HOME $GREETING"', user="root", env={"GREETING": "hi there"}
    )
    assert result.stdout.decode().splitlines() == ["0", "/root hi there"]


async def test_sudo_works_inside_despite_no_new_privs(start_any) -> None:
    session = await start_any()
    if session.runtime.name == "container":  # a guest's own kernel needs no such guard
        status = await session.sh("grep NoNewPrivs /proc/self/status")
        assert status.stdout.split() == [b"NoNewPrivs:", b"1"]
    elevated = await session.sh(
        "sudo id -u; sudo -u nobody id -un; echo piped | sudo cat; sudo -i pwd"
    )
    assert elevated.stdout.decode().split() == ["0", "nobody", "piped", "/root"]
    assert (await session.sh("sudo sh -c 'exit 7'")).exit_code == 7
    # A signal to sudo reaches its command, and sudo ends as it did. (TERM, not INT:
    # POSIX shells start background jobs ignoring SIGINT, which real sudo honours.)
    interrupted = await session.sh("sudo sleep 100 & sleep 0.3; kill -TERM $!; wait $!; echo rc=$?")
    assert interrupted.stdout == b"rc=143\n"
    # Only the sandbox user (and root) may use it, as with the image's sudoers rule.
    refused = await session.sh("sudo -u nobody sudo id", user="root")
    assert refused.exit_code != 0  # (a guest's real sudo asks nobody for a password)
    assert b"sudoers" in refused.stderr or b"a password is required" in refused.stderr


async def test_exit_codes_and_unstartable_commands(start_any) -> None:
    session = await start_any()
    assert (await session.sh("exit 3")).exit_code == 3
    missing = await session.run(["no-such-program-xyz"])
    assert missing.exit_code == 127 and b"command not found" in missing.stderr
    bad_cwd = await session.run(["/bin/true"], cwd="/does/not/exist")
    assert bad_cwd.exit_code != 0 and b"/does/not/exist" in bad_cwd.stderr


async def test_commands_run_concurrently(start_any) -> None:
    session = await start_any()
    # Each command announces itself, then waits for all the others: this
    # finishes only if all run at the same time.
    n = 8
    script = (
        "touch /tmp/ready-$0; for i in $(seq 100); do"
        " [ $(ls /tmp/ready-* | wc -l) -ge {n} ] && exit 0; sleep 0.1; done; exit 1"
    )
    ids = [
        await session.start(["/bin/sh", "-c", script.replace("{n}", str(n)), str(i)])
        for i in range(n)
    ]
    results = await asyncio.gather(*(session.collect(cmd_id) for cmd_id in ids))
    assert [r.exit_code for r in results] == [0] * n


async def test_output_streams_in_order_and_live(start_any) -> None:
    session = await start_any()
    counted = await session.sh("for i in $(seq 1 2000); do echo line $i; done")
    assert counted.stdout.decode().splitlines() == [f"line {i}" for i in range(1, 2001)]

    interleaved = await session.sh("echo a; sleep 0.2; echo b >&2; sleep 0.2; echo c")
    assert [(c.stream, c.data) for c in interleaved.chunks] == [
        ("stdout", b"a\n"),
        ("stderr", b"b\n"),
        ("stdout", b"c\n"),
    ]

    # The command only ends once the host has seen its first line: proof
    # that output arrives while the command runs.
    cmd_id = await session.start(
        ["/bin/sh", "-c", "echo first; while [ ! -e /tmp/go ]; do sleep 0.05; done; echo second"]
    )
    seen = []
    async for item in session.agent.logs(cmd_id):
        if isinstance(item, OutputChunk):
            seen.append(item.data)
            if item.data == b"first\n":
                await session.run(["/bin/touch", "/tmp/go"])
        else:
            assert item.exit_code == 0
    assert b"".join(seen) == b"first\nsecond\n"


async def test_output_is_binary_safe(start_any) -> None:
    session = await start_any()
    every_byte = bytes(range(256)) * 4
    await write(session, "/tmp/bytes", every_byte)
    result = await session.run(["/bin/cat", "/tmp/bytes"])
    assert result.stdout == every_byte


async def test_logs_replay_from_the_start_for_every_reader(start_any) -> None:
    session = await start_any()
    cmd_id = await session.start(["/bin/sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.2; done"])
    await asyncio.sleep(0.3)
    first, second = await asyncio.gather(session.collect(cmd_id), session.collect(cmd_id))
    late = await session.collect(cmd_id)
    assert first.stdout == second.stdout == late.stdout == b"1\n2\n3\n"


async def test_stdin(start_any) -> None:
    session = await start_any()
    cmd_id = await session.start(["/bin/cat"], stdin=True)
    payload = bytes(range(256)) * 1000
    written = await session.agent.write_stdin(cmd_id, chunks_of(payload, 4096))
    result = await session.collect(cmd_id)
    assert written == len(payload)
    assert result.exit_code == 0 and result.stdout == payload


async def test_signals_and_timeouts(start_any) -> None:
    session = await start_any()
    term = await session.start(["/bin/sleep", "100"])
    await session.agent.signal(term, signal.SIGTERM)
    assert (await session.agent.wait(term)).exit_code == 143

    # The signal reaches the whole process group, not just the shell.
    group = await session.start(["/bin/sh", "-c", "sleep 100; echo survived"])
    await asyncio.sleep(0.2)
    await session.agent.signal(group, signal.SIGKILL)
    result = await session.collect(group)
    assert result.exit_code == 137 and b"survived" not in result.stdout

    timed = await session.run(["/bin/sleep", "100"], timeout_ms=300)
    assert timed.exit_code == 137
    assert (await session.run(["/bin/true"], timeout_ms=10_000)).exit_code == 0


async def test_orphans_are_reaped(start_any) -> None:
    session = await start_any()
    await session.sh("(sleep 0.2 &) ; (sleep 0.3 &) ; true")
    await asyncio.sleep(0.6)
    states = (await session.run(["/bin/ps", "-eo", "stat="])).stdout.decode().split()
    assert states and not [s for s in states if s.startswith("Z")]


async def test_unknown_commands_and_bad_requests(start_any) -> None:
    session = await start_any()
    with pytest.raises(AgentError) as missing:
        await session.agent.wait("nope")
    assert missing.value.code == "not_found"
    with pytest.raises(AgentError) as bad:
        await session.agent.exec("bad id!", ["/bin/true"])
    assert bad.value.code == "bad_request"
    with pytest.raises(AgentError) as bad_user:
        await session.agent.exec("c-x", ["/bin/true"], user="mallory")
    assert bad_user.value.code == "bad_request"


# -- files ------------------------------------------------------------------


async def test_files_round_trip_byte_exact(start_any) -> None:
    session = await start_any()
    every_byte = bytes(range(256))
    await write(session, "/vercel/sandbox/dir/bytes.bin", every_byte)
    assert await session.agent.read_bytes("dir/bytes.bin") == every_byte
    stat = await session.agent.stat("/vercel/sandbox/dir/bytes.bin")
    assert stat["type"] == "file" and stat["size"] == 256 and stat["uid"] == 1000

    big = os.urandom(100 * 1024 * 1024)
    await session.agent.write_tar(
        "/vercel/sandbox", chunks_of(tar_of({"big.bin": big}, compression="gz"))
    )
    digest = hashlib.sha256()
    size = 0
    async for chunk in session.agent.read_file("/vercel/sandbox/big.bin"):
        digest.update(chunk)
        size += len(chunk)
    assert size == len(big) and digest.digest() == hashlib.sha256(big).digest()
    inside = await session.run(["/usr/bin/sha256sum", "/vercel/sandbox/big.bin"])
    assert inside.stdout.split()[0].decode() == hashlib.sha256(big).hexdigest()


async def test_mkdir_stat_listdir_remove_rename(start_any) -> None:
    session = await start_any()
    agent = session.agent
    await agent.mkdir("a/b/c", parents=True)
    with pytest.raises(AgentError) as exists:
        await agent.mkdir("a/b/c")
    assert exists.value.code == "exists"
    with pytest.raises(AgentError) as no_parent:
        await agent.mkdir("x/y")
    assert no_parent.value.code == "not_found"
    await write(session, "/vercel/sandbox/a/file.txt", b"hello")
    names = [(e["name"], e["type"]) for e in await agent.listdir("/vercel/sandbox/a")]
    assert names == [("b", "directory"), ("file.txt", "file")]
    owner = await session.sh("stat -c %u:%g a a/b a/b/c")
    assert owner.stdout.decode().split() == ["1000:1000"] * 3
    await agent.rename("a/file.txt", "a/moved.txt")
    assert await agent.read_bytes("/vercel/sandbox/a/moved.txt") == b"hello"
    await agent.remove("a", recursive=True)
    for path, code in (("a", "not_found"), ("/etc", "is_a_directory")):
        with pytest.raises(AgentError) as err:
            await agent.read_bytes(path)
        assert err.value.code == code


# -- persistence --------------------------------------------------------------


async def test_a_stopped_session_becomes_a_layer_and_the_next_session_sees_it(
    start_any, any_runtime: ContainerRuntime | MicroVmRuntime, layer_ids: list[str]
) -> None:
    first = await start_any(keep=True)
    await write(first, "/vercel/sandbox/notes.txt", b"kept")
    await first.sh("rm /etc/issue", user="root")
    await any_runtime.stop(first.session_id)
    assert (await any_runtime.info(first.session_id)).status is SessionStatus.STOPPED
    layer_id = new_layer_id()
    layer_ids.append(layer_id)
    frozen = await any_runtime.freeze(first.session_id, layer_id)
    assert frozen.parent is None
    assert first.session_id not in await any_runtime.sessions()

    second = await start_any(top_layer=layer_id)
    assert await second.agent.read_bytes("/vercel/sandbox/notes.txt") == b"kept"
    assert (await second.sh("test -e /etc/issue")).exit_code == 1
    assert (await second.sh("test -e /etc/os-release")).exit_code == 0


async def test_long_chains_are_flattened(image, layer_ids: list[str], start_session) -> None:
    shallow = ContainerRuntime(
        DATA_DIR,
        id_shift=default_id_shift(),
        layers=LayerStore(DATA_DIR, max_depth=2),
        pool_size=0,
    )
    top = None
    steps = [
        "echo a > /vercel/sandbox/a; rm /etc/issue",
        "echo b > /vercel/sandbox/b; mkdir -p /vercel/sandbox/d; echo x > /vercel/sandbox/d/x",
        "echo c > /vercel/sandbox/c; rm /vercel/sandbox/a; rm -r /vercel/sandbox/d;"
        " mkdir /vercel/sandbox/d",
    ]
    for script in steps:
        session_id = f"{new_layer_id()}-s"
        await shallow.start(SessionSpec(session_id, image.image_id, top_layer=top))
        result = await TestSession(shallow, session_id).sh(script, user="root")
        assert result.exit_code == 0, result.stderr
        await shallow.stop(session_id)
        layer_id = new_layer_id()
        layer_ids.append(layer_id)
        frozen = await shallow.freeze(session_id, layer_id)
        top = frozen.layer_id
    flat = shallow.layers.get(top)
    assert flat.parent is None and flat.flattened_from is not None and flat.depth == 1

    check = await start_session(top_layer=top)
    listing = await check.sh(
        "ls /vercel/sandbox; ls -A /vercel/sandbox/d; test -e /etc/issue; echo issue=$?"
    )
    assert listing.stdout.decode().split() == ["b", "c", "d", "issue=1"]


async def test_usage_and_status(start_any, any_runtime: ContainerRuntime | MicroVmRuntime) -> None:
    session = await start_any()
    await session.sh("head -c 20000000 /dev/urandom | sha256sum >/dev/null")
    usage = await any_runtime.usage(session.session_id)
    assert usage.cpu_ms > 0 and usage.memory_bytes > 0
    if any_runtime.name == "container":  # a guest's processes are its kernel's to count
        assert usage.pids >= 1
    assert usage.disk_used_bytes > 0
    await any_runtime.stop(session.session_id)
    await any_runtime.stop(session.session_id)  # idempotent
    assert (await any_runtime.info(session.session_id)).status is SessionStatus.STOPPED
