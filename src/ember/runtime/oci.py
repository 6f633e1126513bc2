"""Build the OCI runtime config (config.json) of a container session.

A pure function of its inputs, so it can be checked without running runc.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

# Docker's default capability set, less CAP_NET_RAW: raw sockets let a
# session forge packets on its network, and nothing a sandbox user normally
# runs needs them (ping is the usual casualty).
DEFAULT_CAPABILITIES = (
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
)

# Docker's masked and read-only /proc and /sys paths.
MASKED_PATHS = (
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
)
READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)

CPU_PERIOD_US = 100_000
AGENT_MOUNT = "/.ember/agent"
AGENT_PYTHON = "/usr/bin/python3"


@dataclass(frozen=True)
class ContainerConfig:
    rootfs: str
    hostname: str
    agent_dir: str
    agent_user: str
    agent_workdir: str
    cgroups_path: str
    vcpus: float
    memory_mib: int
    pids_max: int
    seccomp: Mapping[str, Any] | None
    id_shift: int = 0  # 0: no user namespace
    id_count: int = 65536
    capabilities: Sequence[str] = DEFAULT_CAPABILITIES
    no_new_privileges: bool = True
    netns_path: str | None = None
    bind_files: Mapping[str, str] = field(default_factory=dict)  # sandbox path -> host file
    writable_files: Mapping[str, str] = field(default_factory=dict)  # the same, read-write
    # A user namespace cannot raise a limit above the host's hard limit, so
    # the caller passes min(wanted, host hard limit).
    nofile: int = 65536
    # Variables every command in the session gets (the agent passes its own on).
    env: Mapping[str, str] = field(default_factory=dict)


def agent_argv(agent_user: str, agent_workdir: str) -> list[str]:
    # -I: ignore PYTHON* variables and the user site; -S: skip site.py (faster start).
    return [
        AGENT_PYTHON,
        "-I",
        "-S",
        f"{AGENT_MOUNT}/__main__.py",
        "--user",
        agent_user,
        "--workdir",
        agent_workdir,
        "--listen-fd",
        "0",
    ]


def _mounts(config: ContainerConfig) -> list[dict[str, Any]]:
    userns = config.id_shift > 0
    mounts: list[dict[str, Any]] = [
        {
            "destination": "/proc",
            "type": "proc",
            "source": "proc",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/dev",
            "type": "tmpfs",
            "source": "tmpfs",
            "options": ["nosuid", "strictatime", "mode=755", "size=65536k"],
        },
        {
            "destination": "/dev/pts",
            "type": "devpts",
            "source": "devpts",
            "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"]
            + ([] if userns else ["gid=5"]),
        },
        {
            "destination": "/dev/shm",
            "type": "tmpfs",
            "source": "shm",
            "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=67108864"],
        },
        {
            "destination": "/dev/mqueue",
            "type": "mqueue",
            "source": "mqueue",
            "options": ["nosuid", "noexec", "nodev"],
        },
        {
            "destination": "/sys",
            "type": "sysfs",
            "source": "sysfs",
            "options": ["nosuid", "noexec", "nodev", "ro"],
        },
        {
            "destination": "/sys/fs/cgroup",
            "type": "cgroup",
            "source": "cgroup",
            "options": ["nosuid", "noexec", "nodev", "relatime", "ro"],
        },
        {
            "destination": AGENT_MOUNT,
            "type": "bind",
            "source": config.agent_dir,
            "options": ["rbind", "ro", "nosuid", "nodev"],
        },
    ]
    # sudo without setuid (sessions run with no_new_privs): see agent/sudo_service.py.
    mounts.append(
        {
            "destination": "/usr/bin/sudo",
            "type": "bind",
            "source": f"{config.agent_dir}/sudo_shim.py",
            "options": ["bind", "ro", "nodev"],
        }
    )
    files = [(d, s, "ro") for d, s in config.bind_files.items()]
    files += [(d, s, "rw") for d, s in config.writable_files.items()]
    for destination, source, mode in sorted(files):
        mounts.append(
            {
                "destination": destination,
                "type": "bind",
                "source": source,
                "options": ["bind", mode, "nosuid", "nodev"],
            }
        )
    return mounts


def oci_config(config: ContainerConfig) -> dict[str, Any]:
    caps = list(config.capabilities)
    namespaces: list[dict[str, str]] = [
        {"type": "pid"},
        {"type": "ipc"},
        {"type": "uts"},
        {"type": "mount"},
        {"type": "cgroup"},
        {"type": "network", **({"path": config.netns_path} if config.netns_path else {})},
    ]
    linux: dict[str, Any] = {
        "namespaces": namespaces,
        "cgroupsPath": config.cgroups_path,
        "resources": {
            "devices": [{"allow": False, "access": "rwm"}],
            "memory": {"limit": config.memory_mib * 1024 * 1024},
            "cpu": {"quota": int(config.vcpus * CPU_PERIOD_US), "period": CPU_PERIOD_US},
            "pids": {"limit": config.pids_max},
        },
        "maskedPaths": list(MASKED_PATHS),
        "readonlyPaths": list(READONLY_PATHS),
    }
    if config.id_shift:
        namespaces.append({"type": "user"})
        mapping = [{"containerID": 0, "hostID": config.id_shift, "size": config.id_count}]
        linux["uidMappings"] = mapping
        linux["gidMappings"] = mapping
    if config.seccomp is not None:
        linux["seccomp"] = dict(config.seccomp)
    return {
        "ociVersion": "1.0.2",
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": agent_argv(config.agent_user, config.agent_workdir),
            "env": [
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "LANG=C.UTF-8",
                *(f"{k}={v}" for k, v in config.env.items()),
            ],
            "cwd": "/",
            "capabilities": {
                "bounding": caps,
                "effective": caps,
                "permitted": caps,
                "inheritable": [],
                "ambient": [],
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": config.nofile, "soft": config.nofile}],
            "noNewPrivileges": config.no_new_privileges,
        },
        "root": {"path": config.rootfs, "readonly": False},
        "hostname": config.hostname,
        "mounts": _mounts(config),
        "linux": linux,
    }
