"""`ember doctor`: what this host offers Ember, each probe with its reason."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from ember.runtime import proc
from ember.runtime.cgroups import is_cgroup_v2
from ember.runtime.container import userns_available
from ember.runtime.seccomp import PROFILE_PATH


@dataclass(frozen=True)
class Probe:
    name: str
    ok: bool
    detail: str


def _tool(name: str, *version_args: str) -> Probe:
    path = shutil.which(name)
    if path is None:
        return Probe(name, False, "not installed")
    if not version_args:
        return Probe(name, True, path)
    done = proc.run([path, *version_args], check=False, timeout_s=10)
    first = (done.stdout or done.stderr).decode(errors="replace").strip().splitlines()
    return Probe(name, done.returncode == 0, first[0] if first else path)


def probe_microvm(data_dir: str) -> Probe:
    """The acceleration verdict of the microVM runtime's probe boot (cached by
    `ember serve`); /dev/kvm existing is not proof that KVM works."""
    verdict_path = Path(data_dir) / "vm" / "accel.json"
    try:
        verdict = json.loads(verdict_path.read_text())
    except (OSError, ValueError):
        device = "/dev/kvm exists" if os.path.exists("/dev/kvm") else "no /dev/kvm"
        return Probe(
            "microvm", False, f"{device}; not probed yet (`ember serve` boots a probe guest)"
        )
    accel = verdict.get("accel")
    return Probe("microvm", accel == "kvm", f"{accel}: {verdict.get('why')}")


def probe_ip_forward() -> Probe:
    try:
        with open("/proc/sys/net/ipv4/ip_forward", encoding="ascii") as f:
            on = f.read().strip() == "1"
    except OSError as exc:
        return Probe("ip_forward", False, str(exc))
    return Probe(
        "ip_forward", on, "on" if on else "off (networking will need it; `ember serve` will set it)"
    )


def probe_disk(path: str) -> Probe:
    target = path if os.path.exists(path) else os.path.dirname(path.rstrip("/")) or "/"
    usage = shutil.disk_usage(target)
    free_gib = usage.free / 2**30
    return Probe("disk", free_gib >= 5, f"{free_gib:.1f} GiB free at {target}")


def run_probes(data_dir: str) -> list[Probe]:
    return [
        Probe(
            "root",
            os.geteuid() == 0,
            "running as root" if os.geteuid() == 0 else "not root: emberd needs root",
        ),
        _tool("runc", "--version"),
        _tool("crun", "--version"),
        _tool("mmdebstrap", "--version"),
        _tool("mkfs.ext4", "-V"),
        _tool("nft", "--version"),
        _tool("qemu-system-x86_64", "--version"),
        Probe("cgroup", True, "v2 (unified)" if is_cgroup_v2() else "v1 (hybrid or legacy)"),
        Probe(
            "user namespaces",
            userns_available(),
            "available: a sandbox's root is an unprivileged host uid"
            if userns_available()
            else "unavailable: sandboxes run without a user namespace",
        ),
        Probe("seccomp profile", os.path.exists(PROFILE_PATH), PROFILE_PATH),
        Probe(
            "overlayfs",
            "overlay" in Path("/proc/filesystems").read_text(encoding="ascii"),
            "/proc/filesystems",
        ),
        probe_microvm(data_dir),
        probe_ip_forward(),
        probe_disk(data_dir),
    ]
