"""A session's resource limits hold, and hitting one never takes the agent down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import re
import signal
import textwrap
from pathlib import Path

import pytest

from ember.runtime import OutputChunk, Resources
from ember.runtime.cgroups import CGROUP_ROOT, is_cgroup_v2, read_usage
from tests.conftest import TestSession

pytestmark = pytest.mark.integration

MIB = 1024 * 1024

# A cgroup knob as (v1 controller, v1 file, v2 file).
CPU_QUOTA = ("cpu", "cpu.cfs_quota_us", "cpu.max")
MEMORY_LIMIT = ("memory", "memory.limit_in_bytes", "memory.max")
PIDS_LIMIT = ("pids", "pids.max", "pids.max")


def cgroup_dir(controller: str, cgroup: str = "/") -> str:
    """Directory of `cgroup`; "/" is the session's own cgroup as seen inside."""
    if is_cgroup_v2():
        return posixpath.join(CGROUP_ROOT, cgroup.lstrip("/"))
    return posixpath.join(CGROUP_ROOT, controller, cgroup.lstrip("/"))


def knob_name(knob: tuple[str, str, str]) -> str:
    return knob[2] if is_cgroup_v2() else knob[1]


def cgroup_file(knob: tuple[str, str, str], cgroup: str = "/") -> str:
    return posixpath.join(cgroup_dir(knob[0], cgroup), knob_name(knob))


def read_host_cgroup(runtime, session: TestSession, controller: str, name: str) -> str:
    """A file of the session's cgroup, read from the host."""
    path = posixpath.join(cgroup_dir(controller, runtime.cgroups_path(session.session_id)), name)
    with open(path) as f:
        return f.read()


async def assert_agent_answers(session: TestSession) -> None:
    """The agent still serves requests and can still run a command."""
    assert (await session.agent.hello())["protocol"] == 1
    result = await session.run(["echo", "alive"])
    assert (result.exit_code, result.stdout) == (0, b"alive\n")


def python(script: str) -> list[str]:
    return ["python3", "-c", textwrap.dedent(script)]


async def read_until(session: TestSession, cmd_id: str, marker: bytes) -> bytes:
    """The command's stdout up to `marker`, while the command keeps running."""
    out = b""
    async for item in session.agent.logs(cmd_id):
        if not isinstance(item, OutputChunk):
            pytest.fail(f"command ended with {item.exit_code} before printing {marker!r}: {out!r}")
        if item.stream == "stdout":
            out += item.data
        if marker in out:
            break
    return out


# -- memory ---------------------------------------------------------------------


async def test_memory_hog_is_oom_killed_and_the_agent_survives(start_session, runtime) -> None:
    session = await start_session(resources=Resources(memory_mib=256))
    hog = python(
        """
        import mmap
        size = 512 * 1024 * 1024
        buf = bytearray(size)
        for i in range(0, size, mmap.PAGESIZE):
            buf[i] = 1
        print("allocated")
        """
    )
    result = await session.run(hog)

    assert result.exit_code == 137  # SIGKILL from the OOM killer
    assert b"allocated" not in result.stdout
    usage = read_usage(runtime.cgroups_path(session.session_id))
    assert usage.oom_kills >= 1
    assert usage.memory_peak_bytes <= 256 * MIB
    await assert_agent_answers(session)


# -- pids -----------------------------------------------------------------------

# Forks until the kernel refuses, reports what it got and what /proc shows,
# then either kills its whole process group or keeps every child alive.
FORK_BOMB = """
import os, signal, sys, time
children, refused, error = 0, 0, ""
for _ in range(200):
    try:
        pid = os.fork()
    except OSError as exc:
        refused += 1
        error = exc.strerror
        continue
    if pid == 0:
        time.sleep(60)
        os._exit(0)
    children += 1
pids = [p for p in os.listdir("/proc") if p.isdigit()]
tasks = sum(len(os.listdir(f"/proc/{p}/task")) for p in pids)
print(f"children={children} refused={refused} processes={len(pids)} tasks={tasks}", end=" ")
print(f"error={error}!", flush=True)
if sys.argv[1] == "hold":
    time.sleep(60)
os.killpg(0, signal.SIGKILL)
"""


def fork_bomb(mode: str) -> list[str]:
    return [*python(FORK_BOMB), mode]


def parse_stats(line: bytes) -> dict[str, str]:
    return dict(re.findall(r"(\w+)=([^=!]*?)(?= \w+=|!)", line.decode()))


async def test_fork_bomb_cannot_exceed_pids_max(start_session, runtime) -> None:
    session = await start_session(resources=Resources(pids_max=64))
    result = await session.run(fork_bomb("exit"))

    assert result.exit_code == 137, result.stderr  # it killed its own group
    stats = parse_stats(result.stdout)
    assert int(stats["refused"]) > 0
    assert stats["error"] == "Resource temporarily unavailable"
    assert int(stats["children"]) < 64
    assert int(stats["processes"]) <= 64
    assert int(stats["tasks"]) <= 64
    assert read_host_cgroup(runtime, session, "pids", "pids.max").strip() == "64"
    await assert_agent_answers(session)


def kill_all_but_the_agent(runtime, session: TestSession) -> None:
    """SIGKILL every process of the session's cgroup except the agent, from the host.

    Needs no help from the agent, so it works even when the agent cannot
    start a thread to serve a `signal` request.
    """
    agent_pid = int((runtime.sessions_dir / session.session_id / "runc.pid").read_text())
    procs = read_host_cgroup(runtime, session, "pids", "cgroup.procs").split()
    for pid in [int(p) for p in procs if int(p) != agent_pid]:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


async def test_agent_survives_connections_while_a_fork_bomb_holds_every_pid(
    start_session, runtime
) -> None:
    session = await start_session(resources=Resources(pids_max=64))
    bomb = await session.start(fork_bomb("hold"))
    try:
        stats = parse_stats(await read_until(session, bomb, b"!"))
        assert int(stats["refused"]) > 0
        # Followers of a running command each keep a worker busy, so the agent
        # must start new threads for them while every pid is taken. Some may
        # fail; the agent must not.
        await asyncio.gather(
            *(read_until(session, bomb, b"!") for _ in range(8)), return_exceptions=True
        )
    finally:
        kill_all_but_the_agent(runtime, session)
    assert (await session.agent.wait(bomb)).exit_code == 137
    await assert_agent_answers(session)


# -- disk -----------------------------------------------------------------------


def host_free_bytes(path: str | os.PathLike[str]) -> int:
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


async def test_full_disk_fails_inside_only(start_session, runtime, tmp_path: Path) -> None:
    session = await start_session(resources=Resources(disk_mib=64))
    disk_image = runtime.sessions_dir / session.session_id / "disk.img"
    free_before = host_free_bytes(runtime.sessions_dir)

    result = await session.sh("dd if=/dev/zero of=/vercel/sandbox/big bs=1M count=200")

    assert result.exit_code != 0
    assert b"No space left on device" in result.stderr
    # The writes stayed on the session's 64 MiB disk; the host lost at most that.
    assert disk_image.stat().st_blocks * 512 <= 64 * MIB
    assert free_before - host_free_bytes(runtime.sessions_dir) < 100 * MIB
    host_file = tmp_path / "still-writable"
    host_file.write_bytes(b"x" * MIB)
    assert host_file.stat().st_size == MIB

    await session.agent.remove("/vercel/sandbox/big")
    again = await session.sh("dd if=/dev/zero of=/vercel/sandbox/small bs=1M count=10 && sync")
    assert again.exit_code == 0, again.stderr
    assert (await session.agent.stat("/vercel/sandbox/small"))["size"] == 10 * MIB


# -- cpu ------------------------------------------------------------------------


@pytest.mark.parametrize(("vcpus", "quota_us"), [(1, 100_000), (0.5, 50_000), (2, 200_000)])
async def test_cpu_quota_is_visible_inside(start_session, vcpus: float, quota_us: int) -> None:
    session = await start_session(resources=Resources(vcpus=vcpus, memory_mib=512))
    result = await session.run(["cat", cgroup_file(CPU_QUOTA)])
    assert result.exit_code == 0, result.stderr
    assert int(result.stdout.split()[0]) == quota_us  # v2 adds the period: "50000 100000"


async def test_busy_loop_is_throttled(start_session, runtime) -> None:
    session = await start_session(resources=Resources(vcpus=0.5, memory_mib=512))
    result = await session.run(["timeout", "1", "sh", "-c", "while :; do :; done"])
    assert result.exit_code == 124  # stopped by timeout
    cpu_stat = read_host_cgroup(runtime, session, "cpu", "cpu.stat")
    counters = dict(line.split() for line in cpu_stat.splitlines())
    assert int(counters["nr_throttled"]) > 0


# -- the limits themselves --------------------------------------------------------


async def test_session_cannot_raise_its_own_limits(start_session, runtime) -> None:
    session = await start_session(resources=Resources(pids_max=64, memory_mib=256))
    knobs = [cgroup_file(k) for k in (PIDS_LIMIT, MEMORY_LIMIT, CPU_QUOTA)]
    script = "; ".join(f"echo max > {path}" for path in knobs)
    result = await session.sh(script, user="root")
    assert result.stderr.count(b"Read-only file system") == len(knobs), result.stderr

    assert read_host_cgroup(runtime, session, "pids", knob_name(PIDS_LIMIT)).strip() == "64"
    memory_limit = read_host_cgroup(runtime, session, "memory", knob_name(MEMORY_LIMIT))
    assert int(memory_limit) == 256 * MIB
