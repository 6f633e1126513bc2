"""Read a session's resource usage from its cgroup, on cgroup v1 or v2."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

CGROUP_ROOT = "/sys/fs/cgroup"


def is_cgroup_v2() -> bool:
    return os.path.exists(os.path.join(CGROUP_ROOT, "cgroup.controllers"))


def _read_int(path: str) -> int:
    try:
        with open(path, encoding="ascii") as f:
            value = f.read().strip()
    except OSError:
        return 0
    return 0 if value in ("", "max") else int(value)


def _read_keyed(path: str) -> dict[str, int]:
    try:
        with open(path, encoding="ascii") as f:
            return {k: int(v) for k, v in (line.split() for line in f if line.strip())}
    except OSError:
        return {}


@dataclass(frozen=True)
class CgroupUsage:
    cpu_ms: int
    memory_bytes: int
    memory_peak_bytes: int
    pids: int
    oom_kills: int


def read_usage(cgroups_path: str) -> CgroupUsage:
    """Usage of the cgroup runc created at `cgroups_path` (e.g. /ember/<id>)."""
    rel = cgroups_path.lstrip("/")
    if is_cgroup_v2():
        base = os.path.join(CGROUP_ROOT, rel)
        return CgroupUsage(
            cpu_ms=_read_keyed(os.path.join(base, "cpu.stat")).get("usage_usec", 0) // 1000,
            memory_bytes=_read_int(os.path.join(base, "memory.current")),
            memory_peak_bytes=_read_int(os.path.join(base, "memory.peak")),
            pids=_read_int(os.path.join(base, "pids.current")),
            oom_kills=_read_keyed(os.path.join(base, "memory.events")).get("oom_kill", 0),
        )

    def v1(controller: str, name: str) -> str:
        return os.path.join(CGROUP_ROOT, controller, rel, name)

    return CgroupUsage(
        cpu_ms=_read_int(v1("cpuacct", "cpuacct.usage")) // 1_000_000,
        memory_bytes=_read_int(v1("memory", "memory.usage_in_bytes")),
        memory_peak_bytes=_read_int(v1("memory", "memory.max_usage_in_bytes")),
        pids=_read_int(v1("pids", "pids.current")),
        oom_kills=_read_keyed(v1("memory", "memory.oom_control")).get("oom_kill", 0),
    )


def exists(cgroups_path: str) -> bool:
    rel = cgroups_path.lstrip("/")
    if is_cgroup_v2():
        return os.path.isdir(os.path.join(CGROUP_ROOT, rel))
    return any(
        os.path.isdir(os.path.join(CGROUP_ROOT, c, rel))
        for c in ("memory", "pids", "cpu", "cpuacct")
    )


def remove(cgroups_path: str) -> None:
    """Remove a session's (empty) cgroup in every hierarchy; missing ones are fine."""
    rel = cgroups_path.lstrip("/")
    bases = (
        [CGROUP_ROOT]
        if is_cgroup_v2()
        else [os.path.join(CGROUP_ROOT, entry) for entry in os.listdir(CGROUP_ROOT)]
    )
    for base in bases:
        path = os.path.join(base, rel)
        if os.path.isdir(path) and not os.path.islink(base):
            # Missing: runc removed it. Busy: a process still runs there, and
            # runc's own delete is the one to retry; never fail a stop over it.
            with contextlib.suppress(FileNotFoundError, OSError):
                os.rmdir(path)
