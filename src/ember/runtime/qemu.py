"""QEMU `-M microvm` command lines, and the probe that picks KVM or TCG.

`/dev/kvm` existing proves nothing (a software hypervisor may offer it and
still not run a stock kernel): the probe boots the guest kernel under KVM
and waits for the initramfs's marker on the console. The verdict is cached
per host, QEMU and guest kernel in `<data_dir>/vm/accel.json`.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

QEMU = "/usr/bin/qemu-system-x86_64"
PROBE_TIMEOUT_S = 20.0
PROBE_MARKER = b"EMBER-PROBE-OK"


@dataclass(frozen=True)
class VmConfig:
    kernel: Path
    initramfs: Path
    accel: str  # "kvm" | "tcg"
    vcpus: int = 1
    memory_mib: int = 512
    disk: Path | None = None  # the session's qcow2 overlay
    agent_socket: Path | None = None  # QEMU listens here for the virtio-serial port
    qmp_socket: Path | None = None
    console_log: Path | None = None
    kernel_args: dict[str, str] = field(default_factory=dict)  # ember.<name>=<value>
    tap: str | None = None
    pidfile: Path | None = None  # daemonize, writing the daemon's pid here


def host_tsc_khz() -> int | None:
    """The host's TSC frequency as its kernel reports it (/proc/cpuinfo's cpu MHz)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("cpu MHz"):
                    return int(float(line.split(":", 1)[1]) * 1000)
    except (OSError, ValueError):
        pass
    return None


def qemu_argv(config: VmConfig) -> list[str]:
    """The command line of a microVM: no firmware, no PCI, virtio-mmio devices only."""
    cpu = "host" if config.accel == "kvm" else "max"
    # panic=-1 and reboot=t: a panic triple-faults at once, and -no-reboot makes
    # that an exit (microvm has no keyboard controller to reboot through).
    append = ["console=ttyS0", "panic=-1", "reboot=t", "quiet", "loglevel=4"]
    if config.accel == "tcg" and (khz := host_tsc_khz()):
        # Under TCG the kernel's calibration against the emulated PIT fails now
        # and then on a busy host, and with no other clock it then hangs: the
        # guest's TSC is the host's, so its frequency is given instead.
        append.append(f"tsc_early_khz={khz}")
    append += [f"ember.{k}={v}" for k, v in config.kernel_args.items()]
    argv = [
        QEMU,
        # The PIT stays: without it the kernel cannot calibrate its clock under TCG.
        "-M", "microvm,acpi=on,rtc=on",
        "-accel", config.accel,
        "-cpu", cpu,
        "-smp", str(config.vcpus),
        "-m", f"{config.memory_mib}M",
        "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
        "-kernel", str(config.kernel),
        "-initrd", str(config.initramfs),
        "-append", " ".join(append),
        "-device", "virtio-rng-device",
        # QEMU's own seccomp filter: no obsolete calls, no resource or scheduler
        # control. (Spawning stays allowed: saving memory goes through `exec:`;
        # elevateprivileges=deny makes -daemonize fail.)
        "-sandbox", "on,obsolete=deny,resourcecontrol=deny",
    ]  # fmt: skip
    if config.console_log is not None:
        argv += ["-chardev", f"file,id=console,path={config.console_log}"]
        argv += ["-serial", "chardev:console"]
    else:
        argv += ["-serial", "stdio"]
    if config.disk is not None:
        argv += ["-drive", f"id=root,file={config.disk},format=qcow2,if=none,discard=unmap"]
        argv += ["-device", "virtio-blk-device,drive=root"]
    if config.agent_socket is not None:
        argv += ["-device", "virtio-serial-device"]
        argv += ["-chardev", f"socket,id=agent,path={config.agent_socket},server=on,wait=off"]
        argv += ["-device", "virtserialport,chardev=agent,name=ember.agent"]
    if config.qmp_socket is not None:
        argv += ["-qmp", f"unix:{config.qmp_socket},server=on,wait=off"]
    if config.pidfile is not None:
        argv += ["-daemonize", "-pidfile", str(config.pidfile)]
    if config.tap is not None:
        argv += ["-netdev", f"tap,id=net,ifname={config.tap},script=no,downscript=no"]
        argv += ["-device", "virtio-net-device,netdev=net"]
    return argv


def boot_to_marker(kernel: Path, initramfs: Path, accel: str) -> tuple[float | None, str]:
    """Boot the guest's kernel with the probe flag; (seconds until init's marker
    appeared on the console, or None, and what happened)."""
    config = VmConfig(kernel, initramfs, accel, memory_mib=256, kernel_args={"probe": "1"})
    started = time.monotonic()
    child = subprocess.Popen(
        qemu_argv(config), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    assert child.stdout is not None and child.stderr is not None
    watchdog = threading.Timer(PROBE_TIMEOUT_S, child.kill)  # a hung guest prints nothing
    watchdog.start()
    try:
        for line in child.stdout:
            if PROBE_MARKER in line:
                return time.monotonic() - started, "reached init"
        child.wait()
        errors = child.stderr.read().decode(errors="replace").strip().splitlines()
        if time.monotonic() - started >= PROBE_TIMEOUT_S:
            return None, f"no sign of init within {PROBE_TIMEOUT_S:.0f} s"
        return None, f"QEMU exited ({child.returncode}): {errors[0] if errors else 'no message'}"
    finally:
        watchdog.cancel()
        if child.poll() is None:
            child.kill()
        child.wait()
        child.stdout.close()
        child.stderr.close()


def _boots(kernel: Path, initramfs: Path, accel: str) -> tuple[bool, str]:
    """Whether the guest reaches its init under `accel`, and what happened."""
    seconds, what = boot_to_marker(kernel, initramfs, accel)
    if seconds is None:
        return False, what
    return True, f"reached init in {seconds:.1f} s"


def _qemu_version() -> str:
    done = subprocess.run([QEMU, "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else "unknown"


def acceleration(data_dir: Path, kernel: Path, initramfs: Path) -> dict[str, object]:
    """The verdict for this host: {"accel": "kvm"|"tcg", "why": ..., ...} (cached)."""
    cache = data_dir / "vm" / "accel.json"
    key = {"host": os.uname().release, "qemu": _qemu_version(), "kernel": kernel.name}
    try:
        cached = json.loads(cache.read_text())
        if cached.get("key") == key:
            return dict(cached)
    except (OSError, ValueError):
        pass
    verdict: dict[str, object]
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        verdict = {"accel": "tcg", "why": "no usable /dev/kvm"}
    else:
        works, what = _boots(kernel, initramfs, "kvm")
        if works:
            verdict = {"accel": "kvm", "why": f"a KVM probe boot {what}"}
        else:
            verdict = {
                "accel": "tcg",
                "why": f"/dev/kvm exists, but a KVM probe boot failed ({what}): "
                "software emulation (TCG), far slower for CPU-bound code",
            }
    verdict["key"] = key
    verdict["probed_at"] = int(time.time())
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(verdict, indent=2))
    return verdict
