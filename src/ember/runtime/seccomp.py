"""The seccomp profile of container sessions: Docker's default policy.

The list of ordinary syscalls comes from the distribution's container
profile (`/usr/share/containers/seccomp.json`, Debian package
golang-github-containers-common), which is Docker's default profile in
Docker's format. That file is slightly more permissive than Docker's for
rootless builds; `DOCKER_SYS_ADMIN_ONLY` restores Docker's rules, and clone is
allowed only without namespace flags, as Docker does. The result is resolved
for our capability set and the host architecture into an OCI `linux.seccomp`.
"""

from __future__ import annotations

import errno
import json
import platform
from collections.abc import Iterable
from typing import Any

PROFILE_PATH = "/usr/share/containers/seccomp.json"

# Syscalls Docker allows only with CAP_SYS_ADMIN (which sessions never have),
# plus the keyring calls Docker denies outright.
DOCKER_SYS_ADMIN_ONLY = frozenset(
    {
        "bpf",
        "clone3",
        "fanotify_init",
        "fsconfig",
        "fsmount",
        "fsopen",
        "fspick",
        "lookup_dcookie",
        "mount",
        "mount_setattr",
        "move_mount",
        "name_to_handle_at",
        "open_tree",
        "perf_event_open",
        "pivot_root",
        "quotactl",
        "quotactl_fd",
        "setdomainname",
        "sethostname",
        "setns",
        "syslog",
        "umount",
        "umount2",
        "unshare",
        "add_key",
        "keyctl",
        "request_key",
    }
)
NAMESPACE_FLAGS = 0x7E020000  # CLONE_NEWNS|NEWCGROUP|NEWUTS|NEWIPC|NEWUSER|NEWPID|NEWNET

# Only the native architecture: a syscall made through the 32-bit (i386, x32,
# arm) entry points kills the process. That closes the compat syscall
# surface, and a filter for one architecture halves runc's start (~30 ms
# here). The cost: 32-bit binaries do not run in sessions.
_ARCHES = {
    "x86_64": ("amd64", ["SCMP_ARCH_X86_64"]),
    "aarch64": ("arm64", ["SCMP_ARCH_AARCH64"]),
}


class SeccompProfileError(Exception):
    """The distribution's seccomp profile is missing or unreadable."""


def load_docker_profile(path: str = PROFILE_PATH) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            profile: dict[str, Any] = json.load(f)
    except (OSError, ValueError) as exc:
        raise SeccompProfileError(
            f"cannot read the seccomp profile {path} ({exc}); install the Debian package "
            "golang-github-containers-common (make setup does)"
        ) from exc
    return profile


def _applies(rule: dict[str, Any], caps: set[str], arch: str) -> bool:
    includes, excludes = rule.get("includes") or {}, rule.get("excludes") or {}
    if includes.get("arches") and arch not in includes["arches"]:
        return False
    if includes.get("caps") and not set(includes["caps"]) <= caps:
        return False
    if excludes.get("arches") and arch in excludes["arches"]:
        return False
    return not (excludes.get("caps") and set(excludes["caps"]) & caps)


def oci_seccomp(
    profile: dict[str, Any], capabilities: Iterable[str], machine: str | None = None
) -> dict[str, Any]:
    """Resolve a Docker-format profile into an OCI runtime-spec seccomp object."""
    machine = machine or platform.machine()
    if machine not in _ARCHES:
        raise SeccompProfileError(f"no seccomp architecture mapping for {machine!r}")
    arch, scmp_arches = _ARCHES[machine]
    caps = set(capabilities)
    syscalls: list[dict[str, Any]] = []
    for rule in profile["syscalls"]:
        if not _applies(rule, caps, arch):
            continue
        names = list(rule["names"])
        if rule["action"] == "SCMP_ACT_ALLOW" and "CAP_SYS_ADMIN" not in caps:
            names = [n for n in names if n not in DOCKER_SYS_ADMIN_ONLY and n != "clone"]
        if not names:
            continue
        out: dict[str, Any] = {"names": names, "action": rule["action"]}
        if rule.get("args"):
            out["args"] = rule["args"]
        if rule.get("errnoRet") is not None:
            out["errnoRet"] = rule["errnoRet"]
        syscalls.append(out)
    if "CAP_SYS_ADMIN" not in caps:
        syscalls.append(
            {
                "names": ["clone"],
                "action": "SCMP_ACT_ALLOW",
                "args": [
                    {
                        "index": 0,
                        "value": NAMESPACE_FLAGS,
                        "valueTwo": 0,
                        "op": "SCMP_CMP_MASKED_EQ",
                    }
                ],
            }
        )
        # ENOSYS makes glibc fall back to clone, whose flags we can inspect.
        syscalls.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": errno.ENOSYS})
    return {
        "defaultAction": profile.get("defaultAction", "SCMP_ACT_ERRNO"),
        "defaultErrnoRet": profile.get("defaultErrnoRet", errno.EPERM),
        "architectures": scmp_arches,
        "syscalls": syscalls,
    }
