"""Escape attempts from inside a session fail: processes, files, kernel knobs,
mounts, raw sockets, ptrace, devices, privileges.

Most probes run as the session's root (`user="root"`), the strongest user a
session has: the default user reaches root through the agent's sudo service.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import RUN_PREFIX, TestSession

pytestmark = pytest.mark.integration

ROOT = "/vercel/sandbox"

# Helpers available to every probe: `attempt(fn, *args)` returns "ok" or the
# errno name of the OSError it raised; `ptrace_seize(pid)` attaches without
# stopping the tracee (the tracer's exit detaches it again).
PROBE_PRELUDE = """
import ctypes, errno, json, os, stat, sys
libc = ctypes.CDLL(None, use_errno=True)

def attempt(fn, *args):
    try:
        fn(*args)
    except OSError as exc:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return "ok"

def check(result):
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))

def ptrace_seize(pid):
    check(libc.ptrace(0x4206, pid, 0, 0))

def mount(source, target, fstype):
    check(libc.mount(source.encode(), target.encode(), fstype.encode(), 0, None))

def unshare(flags):
    check(libc.unshare(flags))

def setns(path):
    check(libc.setns(os.open(path, os.O_RDONLY), 0))

def read(path):
    with open(path, "rb") as f:
        return f.read(4096)

def write(path, data=b"1"):
    with open(path, "wb") as f:
        f.write(data)
"""


async def probe(session: TestSession, code: str, *, user: str = "root") -> Any:
    """Run Python inside the session; returns what it printed, as JSON."""
    script = PROBE_PRELUDE + textwrap.dedent(code)
    result = await session.run(["python3", "-c", script], user=user)
    assert result.exit_code == 0, result.stderr.decode()
    return json.loads(result.stdout)


async def unique_host_process() -> tuple[asyncio.subprocess.Process, str]:
    """A host process with an argv nothing else has."""
    marker = f"{int.from_bytes(os.urandom(3), 'big') + 1_000_000}.5"
    process = await asyncio.create_subprocess_exec("sleep", marker)
    # Until its exec completes, the child's cmdline may still read empty.
    for _ in range(200):
        with open(f"/proc/{process.pid}/cmdline", "rb") as f:
            if marker.encode() in f.read():
                break
        await asyncio.sleep(0.01)
    return process, marker


# -- processes ------------------------------------------------------------------


async def test_host_processes_are_invisible(start_session) -> None:
    host, marker = await unique_host_process()
    try:
        with open(f"/proc/{host.pid}/cmdline", "rb") as f:
            assert marker.encode() in f.read()  # the host sees it, so the probe can find it
        session = await start_session()
        seen = await probe(
            session,
            f"""
            processes = {{}}
            for pid in filter(str.isdigit, os.listdir("/proc")):
                try:
                    processes[pid] = read(f"/proc/{{pid}}/cmdline").replace(b"\\0", b" ").decode()
                except OSError:
                    pass
            print(json.dumps({{
                "processes": processes,
                "kill_host_pid": attempt(os.kill, {host.pid}, 0),
                "ptrace_host_pid": attempt(ptrace_seize, {host.pid}),
            }}))
            """,
        )
    finally:
        host.kill()
        await host.wait()

    processes = seen["processes"]
    assert "/.ember/agent/" in processes["1"]  # PID 1 is the agent
    assert len(processes) <= 4, processes  # the agent, the probe, maybe a helper
    assert not [args for args in processes.values() if marker in args]
    assert seen["kill_host_pid"] == "ESRCH"
    assert seen["ptrace_host_pid"] == "ESRCH"


async def test_default_user_cannot_touch_the_agent(start_session) -> None:
    session = await start_session()
    seen = await probe(
        session,
        """
        print(json.dumps({
            "ptrace": attempt(ptrace_seize, 1),
            "environ": attempt(read, "/proc/1/environ"),
            "mem": attempt(read, "/proc/1/mem"),
            "kill": attempt(os.kill, 1, 9),
        }))
        """,
        user="default",
    )
    assert seen == {"ptrace": "EPERM", "environ": "EACCES", "mem": "EACCES", "kill": "EPERM"}
    assert (await session.agent.hello())["protocol"] == 1


async def test_session_root_cannot_ptrace_the_agent(start_session) -> None:
    session = await start_session()
    # PTRACE_SEIZE, not PTRACE_ATTACH: if it succeeds, the agent keeps running.
    seen = await probe(session, "print(json.dumps(attempt(ptrace_seize, 1)))")
    assert seen == "EPERM"


# -- files ----------------------------------------------------------------------


async def test_host_files_are_invisible(start_session, runtime) -> None:
    name = f"ember-{RUN_PREFIX}-{uuid.uuid4().hex[:8]}"
    host_files = [Path("/root") / name, Path("/tmp") / name]
    try:
        for path in host_files:
            path.write_text("host secret\n")
        session = await start_session()
        # The same name inside the sandbox is found, so the search works.
        result = await session.sh(
            f"touch {ROOT}/{name}; "
            f"ls -d {' '.join(map(str, host_files))} {runtime.sessions_dir} 2>/dev/null; "
            f"find / -xdev -name {name} 2>/dev/null",
            user="root",
        )
    finally:
        for path in host_files:
            path.unlink(missing_ok=True)
    assert result.stdout == f"{ROOT}/{name}\n".encode()


async def test_kernel_settings_are_read_only(start_session) -> None:
    session = await start_session()
    seen = await probe(
        session,
        """
        paths = ["/proc/sys/kernel/sysrq", "/proc/sys/kernel/hostname",
                 "/proc/sys/vm/drop_caches", "/proc/sys/net/ipv4/ip_forward",
                 "/proc/sysrq-trigger", "/sys/kernel/uevent_helper",
                 "/sys/kernel/mm/transparent_hugepage/enabled"]
        print(json.dumps({p: attempt(write, p) for p in paths if os.path.exists(p)}))
        """,
    )
    assert "/proc/sys/kernel/hostname" in seen  # enough paths exist for the test to mean something
    assert set(seen.values()) <= {"EROFS", "EACCES", "EPERM"}, seen
    hostname = await session.run(["cat", "/proc/sys/kernel/hostname"])
    assert hostname.stdout == b"sandbox\n"


async def test_masked_paths_read_empty(start_session) -> None:
    session = await start_session()
    seen = await probe(
        session,
        """
        paths = ["/proc/kcore", "/proc/keys", "/proc/timer_list", "/proc/sched_debug",
                 "/proc/latency_stats", "/proc/acpi", "/proc/scsi", "/sys/firmware"]
        contents = {}
        for path in paths:
            if os.path.isdir(path):
                contents[path] = os.listdir(path)
            elif os.path.exists(path):
                try:
                    contents[path] = read(path).decode(errors="replace")
                except OSError as exc:
                    contents[path] = errno.errorcode[exc.errno]
        print(json.dumps(contents))
        """,
    )
    assert seen.get("/proc/keys") == ""
    for path, content in seen.items():
        assert content in ("", [], "EPERM", "EACCES"), (path, content)


# -- mounts and namespaces ----------------------------------------------------------


async def test_cannot_mount_or_create_namespaces(start_session) -> None:
    session = await start_session()
    seen = await probe(
        session,
        """
        os.makedirs("/tmp/mnt", exist_ok=True)
        print(json.dumps({
            "tmpfs": attempt(mount, "none", "/tmp/mnt", "tmpfs"),
            "proc": attempt(mount, "proc", "/tmp/mnt", "proc"),
            "unshare": {name: attempt(unshare, flag) for name, flag in [
                ("newns", 0x20000), ("newcgroup", 0x02000000), ("newuts", 0x04000000),
                ("newipc", 0x08000000), ("newuser", 0x10000000), ("newpid", 0x20000000),
                ("newnet", 0x40000000)]},
            "setns": attempt(setns, "/proc/1/ns/mnt"),
        }))
        """,
    )
    assert seen["tmpfs"] != "ok" and seen["proc"] != "ok", seen
    assert "ok" not in seen["unshare"].values(), seen
    assert seen["setns"] != "ok", seen
    for flag in ("-m", "-U", "-r", "-n", "-p -f"):
        result = await session.sh(f"unshare {flag} true", user="root")
        assert result.exit_code != 0, (flag, result.stderr)


async def test_network_and_hostname_are_private(start_session) -> None:
    session = await start_session()
    result = await session.sh("cat /proc/net/dev; hostname")
    lines = result.stdout.decode().splitlines()
    interfaces = {line.split(":")[0].strip() for line in lines[2:-1]}
    assert interfaces == {"lo"}
    assert lines[-1] == "sandbox" != socket.gethostname()


async def test_raw_sockets_are_refused(start_session) -> None:
    session = await start_session()
    code = """
        import socket
        kinds = {"inet_raw": (socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP),
                 "packet": (socket.AF_PACKET, socket.SOCK_RAW, 0)}
        opened = {k: attempt(lambda a: socket.socket(*a).close(), v) for k, v in kinds.items()}
        print(json.dumps(opened))
        """
    for user in ("root", "default"):
        assert await probe(session, code, user=user) == {"inet_raw": "EPERM", "packet": "EPERM"}
    result = await session.run(
        [
            "python3",
            "-c",
            "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)",
        ],
        user="root",
    )
    assert result.exit_code != 0
    assert b"PermissionError" in result.stderr


# -- devices --------------------------------------------------------------------

# The device nodes runc creates, then the mounts and links of a standard /dev.
STANDARD_DEV_NODES = {"null", "zero", "full", "random", "urandom", "tty", "console"}
STANDARD_DEV_OTHERS = {"ptmx", "pts", "shm", "mqueue", "fd", "stdin", "stdout", "stderr"}
STANDARD_DEV = STANDARD_DEV_NODES | STANDARD_DEV_OTHERS


async def test_only_standard_devices_exist(start_session) -> None:
    session = await start_session()
    entries = set(await probe(session, 'print(json.dumps(os.listdir("/dev")))'))
    assert {"null", "zero", "urandom", "pts", "shm"} <= entries
    assert entries <= STANDARD_DEV, entries - STANDARD_DEV
    assert not entries & {"kvm", "vda", "sda", "mem", "kmem", "port", "kmsg", "loop0", "fuse"}


async def test_device_nodes_cannot_be_made_or_opened(start_session) -> None:
    session = await start_session()
    seen = await probe(
        session,
        """
        results = {}
        for name, kind, major, minor in [("sda", stat.S_IFBLK, 8, 0), ("mem", stat.S_IFCHR, 1, 1),
                                         ("vda", stat.S_IFBLK, 253, 0)]:
            path = f"/tmp/{name}"
            made = attempt(os.mknod, path, kind | 0o600, os.makedev(major, minor))
            results[name] = {"mknod": made, "open": attempt(read, path) if made == "ok" else None}
        print(json.dumps(results))
        """,
    )
    for name, result in seen.items():
        assert result["mknod"] != "ok" or result["open"] != "ok", (name, result)


# -- privileges ------------------------------------------------------------------

FORBIDDEN_CAPS = {
    "CAP_DAC_READ_SEARCH": 2,
    "CAP_NET_ADMIN": 12,
    "CAP_NET_RAW": 13,
    "CAP_SYS_MODULE": 16,
    "CAP_SYS_RAWIO": 17,
    "CAP_SYS_PTRACE": 19,
    "CAP_SYS_ADMIN": 21,
    "CAP_SYS_BOOT": 22,
    "CAP_SYS_TIME": 25,
    "CAP_MAC_ADMIN": 33,
    "CAP_SYSLOG": 34,
    "CAP_PERFMON": 38,
    "CAP_BPF": 39,
}


def status_fields(text: bytes) -> dict[str, str]:
    return {
        key: value.strip()
        for key, _, value in (line.partition(":") for line in text.decode().splitlines())
    }


@pytest.mark.parametrize("user", ["root", "default"])
async def test_commands_lack_dangerous_capabilities(start_session, user: str) -> None:
    session = await start_session()
    status = status_fields((await session.run(["cat", "/proc/self/status"], user=user)).stdout)
    for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb", "CapInh"):
        caps = int(status[field], 16)
        held = [name for name, bit in FORBIDDEN_CAPS.items() if caps & (1 << bit)]
        assert not held, (field, held)
    if user == "default":
        assert int(status["CapEff"], 16) == int(status["CapPrm"], 16) == 0
    assert status["NoNewPrivs"] == "1"
    assert status["Seccomp"] == "2"  # filter mode


async def test_root_is_an_unprivileged_host_user(start_session, runtime) -> None:
    if not runtime.id_shift:
        pytest.skip("the runtime does not use user namespaces (id_shift = 0)")
    session = await start_session()
    maps = await session.sh(
        "cat /proc/self/uid_map /proc/self/gid_map; sleep 30 >/dev/null 2>&1 & echo started",
        user="root",
    )
    assert [line.split() for line in maps.stdout.decode().splitlines()[:2]] == [
        ["0", str(runtime.id_shift), "65536"]
    ] * 2

    # On the host, every process of the session runs as a shifted uid.
    agent_pid = int((runtime.sessions_dir / session.session_id / "runc.pid").read_text())
    session_pidns = os.readlink(f"/proc/{agent_pid}/ns/pid")
    uids = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == session_pidns:
                with open(f"/proc/{pid}/status", "rb") as f:
                    uids[pid] = status_fields(f.read())["Uid"].split()
        except OSError:
            continue  # exited meanwhile
    assert len(uids) >= 2, uids  # the agent and the background sleep
    for pid, ids in uids.items():
        assert all(runtime.id_shift <= int(i) < runtime.id_shift + 65536 for i in ids), (pid, ids)
