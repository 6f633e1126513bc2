"""The microVM runtime: each session is a QEMU `-M microvm` guest with its own kernel.

Per session, under `<data_dir>/vms/<id>/` (mode 0700):

    disk.qcow2    the session's writable disk: a qcow2 overlay whose backing
                  file is its top snapshot layer (a qcow2 overlay too) or the
                  image's read-only root disk (`image/vmdisk.py`)
    port.sock     QEMU's socket for the guest's virtio-serial port
    agent.sock    the agent channels' host end (`channels.py`): AgentClient
                  connects here, as to a container's agent
    qmp.sock      QMP, spoken with the `qemu.qmp` library
    console.log   the guest's serial console
    qemu.pid      QEMU daemonizes: sessions outlive emberd and are adopted
    qemu.log      what QEMU itself says
    session.json  the spec and start time, for info() and recovery

The guest boots Debian's cloud kernel with Ember's initramfs (`image/`),
which mounts the disk and becomes the agent. KVM or TCG is decided once per
host by a probe boot (`qemu.py`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import signal
import time
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from qemu.qmp import QMPClient

from ember.image import ImageStore
from ember.image.initramfs import build_initramfs
from ember.image.kernel import GuestAssetError, GuestKernel, fetch_busybox, fetch_kernel
from ember.image.vmdisk import root_disk
from ember.network import NetworkManager
from ember.snapshots import LayerStore

from . import mounts, proc
from .agent_client import AgentClient, AgentUnavailableError
from .base import (
    EmberRuntimeError,
    FrozenLayer,
    ResourceUsage,
    SessionInfo,
    SessionNotFoundError,
    SessionSpec,
    SessionStartError,
    SessionStatus,
    info_from_json,
    info_to_json,
)
from .channels import HostChannels
from .failures import start_error
from .qemu import VmConfig, acceleration, qemu_argv
from .warm import WarmGuest, WarmPool, end_guest_files, warm_netns

log = logging.getLogger("ember.runtime")
AGENT_READY_TIMEOUT_S = 180.0  # a cold boot under TCG takes seconds, on a busy host more
STOP_TIMEOUT_S = 10.0
QEMU_START_TIMEOUT_S = 60.0
SYNC_TIMEOUT_S = 30.0
DEFAULT_USER = "vercel-sandbox"
DEFAULT_WORKDIR = "/vercel/sandbox"
TAP = "tap0"  # in the session's own namespace
SESSION_DIR = "@SESSION_DIR@"  # in a template's saved command line
TEMPLATE_UNUSED_DAYS = 7
# Run in a template's guest before it is saved (see _zero_free_memory).
ZERO_FREE_MEMORY = """
import mmap, os
os.sync()
with open("/proc/sys/vm/drop_caches", "w") as f:
    f.write("3")  # unmapped page cache is read again from the disk when needed
def meminfo(key):
    return next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith(key)) << 10
# In steps, keeping an eighth of memory (above the kernel's watermarks) free:
# the OOM killer must not come.
keep = meminfo("MemTotal:") // 8 + (32 << 20)
held = []
while meminfo("MemFree:") > keep:
    held.append(mmap.mmap(-1, 16 << 20, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE))
"""


def _in_namespace(netns: str | None, argv: list[str]) -> list[str]:
    """`argv` run inside the named network namespace `netns` (if any)."""
    return ["ip", "netns", "exec", netns, *argv] if netns is not None else argv


async def _namespace_with_tap(netns: str) -> None:
    """A named network namespace holding the tap device QEMU opens inside it."""
    await proc.run_async(["ip", "netns", "add", netns])
    await proc.run_async(_in_namespace(netns, ["ip", "tuntap", "add", "dev", TAP, "mode", "tap"]))


async def _daemonize(argv: list[str], log_path: Path) -> None:
    """Run QEMU with -daemonize: returns once its first process exits (the VM
    runs on). Its output goes to a file, not pipes: the daemon would hold a
    pipe open."""
    with open(log_path, "ab") as log:
        child = await asyncio.create_subprocess_exec(
            *argv, stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=log
        )
    try:
        code = await asyncio.wait_for(child.wait(), QEMU_START_TIMEOUT_S)
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            child.kill()
        await child.wait()
        raise
    if code != 0:
        tail = log_path.read_text(errors="replace")[-2000:]
        raise proc.ProcessError(argv, code, tail.encode())


class MicroVmRuntime:
    name = "microvm"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        layers: LayerStore | None = None,
        id_shift: int = 0,
        network: NetworkManager | None = None,
        templates: bool = True,
        warm: int = 0,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.vms_dir = self.data_dir / "vms"
        self.vms_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.layers = layers or LayerStore(self.data_dir)
        self.images = ImageStore(self.data_dir)
        self.id_shift = id_shift
        self.network = network
        self._channels: dict[str, HostChannels] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._kernel: GuestKernel | None = None
        self._initramfs: Path | None = None
        self._accel: str | None = None
        self._verdict: dict[str, object] | None = None
        self.templates = templates
        self._template_lock = asyncio.Lock()
        self.warm = WarmPool(self.vms_dir, warm if templates else 0, self._make_warm)

    # -- assets ---------------------------------------------------------------

    def prepare(self) -> dict[str, object]:
        """Fetch and build what guests boot from, and probe the acceleration (all cached;
        after the first call, from memory: every start calls this)."""
        if self._verdict is not None:
            return self._verdict
        if self._kernel is None or self._initramfs is None:
            # Real paths: QEMU command lines and qcow2 backing files are saved with
            # them (templates), and `vm/` may be a link shared by data directories.
            self._kernel = fetch_kernel(self.data_dir)
            self._kernel = dataclasses.replace(self._kernel, root=self._kernel.root.resolve())
            egress = self.network.egress if self.network is not None else None
            self._initramfs = build_initramfs(
                self.data_dir,
                self._kernel,
                fetch_busybox(self.data_dir),
                egress.ca.cert_pem if egress is not None else b"",
            ).resolve()
        verdict = acceleration(self.data_dir, self._kernel.vmlinuz, self._initramfs)
        self._accel = str(verdict["accel"])
        self._verdict = verdict
        self._forget_stale_templates()
        return verdict

    def _forget_stale_templates(self) -> None:
        """Delete templates no start used for a week (each holds 100 MB or more;
        keys change with the agent, the image, sizes). A start links the memory
        file, which sets its change time: that is the last use."""
        templates = (self.data_dir / "vm").resolve() / "templates"
        if not templates.is_dir():
            return
        cutoff = time.time() - TEMPLATE_UNUSED_DAYS * 86400
        for directory in templates.iterdir():
            if directory.name.startswith("."):
                continue  # being built
            with contextlib.suppress(OSError):
                if (directory / "memory.bin").stat().st_ctime < cutoff:
                    log.info("deleting the microVM template %s, unused for a week", directory)
                    mounts.remove_tree(str(directory))

    def _dir(self, session_id: str) -> Path:
        return self.vms_dir / session_id

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    def holds(self, session_id: str) -> bool:
        return self._dir(session_id).is_dir()

    def agent(self, session_id: str) -> AgentClient:
        return AgentClient(str(self._dir(session_id) / "agent.sock"))

    # -- start ----------------------------------------------------------------

    async def start(self, spec: SessionSpec) -> SessionInfo:
        async with self._lock(spec.session_id):
            sdir = self._dir(spec.session_id)
            if sdir.exists():
                raise SessionStartError(f"session {spec.session_id} already exists")
            started_at_ms = int(time.time() * 1000)
            try:
                template = await self._template(spec) if self.templates else None
                guest = self.warm.take(template) if template is not None else None
                while guest is not None and not proc.pid_alive(guest.pid):  # died waiting
                    await guest.channels.close()
                    await asyncio.to_thread(end_guest_files, guest.directory)
                    guest = self.warm.take(template) if template is not None else None
                if guest is not None:
                    await self._start_warm(spec, sdir, guest)
                else:
                    sdir.mkdir(mode=0o700)
                    if template is not None:
                        await self._start_from_template(spec, sdir, template)
                    else:
                        await self._boot(spec, sdir)
                if template is not None:
                    self.warm.refill(template)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await self._end(spec.session_id)
                    await asyncio.to_thread(mounts.remove_tree, str(sdir))
                failure = start_error(exc, f"microVM session {spec.session_id}")
                if failure is not None:
                    raise failure from exc
                if isinstance(exc, GuestAssetError):
                    raise SessionStartError(str(exc)) from exc
                raise
            info = SessionInfo(
                spec.session_id,
                self.name,
                SessionStatus.RUNNING,
                started_at_ms,
                DEFAULT_USER,
                DEFAULT_WORKDIR,
                spec,
            )
            (sdir / "session.json").write_text(json.dumps(info_to_json(info)))
            return info

    async def _boot(self, spec: SessionSpec, sdir: Path) -> None:
        """A cold boot: kernel, initramfs, the agent."""
        config = await asyncio.to_thread(self._prepare, sdir, spec)
        argv = qemu_argv(config)
        (sdir / "qemu.argv.json").write_text(json.dumps(argv))
        await self._launch(spec.session_id, sdir, argv)
        await self._attach(spec.session_id)
        await self._wait_for_agent(sdir)

    async def _launch(
        self, session_id: str, sdir: Path, argv: list[str], *, incoming: bool = False
    ) -> None:
        """Start QEMU from its saved command line: inside the session's network
        namespace when it has one (QEMU opens the tap there), and loading
        `memory.bin` when `incoming`."""
        if incoming:
            argv = [*argv, "-incoming", f"exec:cat {sdir / 'memory.bin'}"]
        netns = self.network.netns(session_id) if self.network is not None else None
        await _daemonize(_in_namespace(netns, argv), sdir / "qemu.log")

    # -- templates: a booted guest per image and size, restored instead of booting

    def _template_dir(self, spec: SessionSpec) -> Path:
        assert self._initramfs is not None
        config = self._vm_resources(spec)
        key = f"{spec.image_id}-{self._initramfs.name.split('.')[0]}-{self._accel}"
        key += f"-{config[0]}c{config[1]}m-{spec.resources.disk_mib}d"
        key += f"-{'net' if self.network is not None else 'nonet'}-{ZERO_FREE_MEMORY}"
        # Hashed: QEMU's sockets live in the directory, and socket paths are short.
        templates = (self.data_dir / "vm").resolve() / "templates"
        return templates / hashlib.sha256(key.encode()).hexdigest()[:16]

    @staticmethod
    def _vm_resources(spec: SessionSpec) -> tuple[int, int]:
        return max(1, math.ceil(spec.resources.vcpus)), spec.resources.memory_limit_mib

    async def _template(self, spec: SessionSpec) -> Path | None:
        """The paused template for the spec's image and size (built on first use),
        or None when the session must boot (it starts from a snapshot layer)."""
        if spec.top_layer is not None:
            return None
        if self.network is not None and spec.network_policy is None:
            return None  # the template's tap would have no namespace to live in
        await asyncio.to_thread(self.prepare)
        directory = self._template_dir(spec)
        if (directory / "memory.bin").exists():
            return directory
        async with self._template_lock:
            if not (directory / "memory.bin").exists():
                await self._build_template(spec, directory)
        return directory

    async def _build_template(self, spec: SessionSpec, directory: Path) -> None:
        """Boot a guest with no session's details (no address, hostname `sandbox`),
        with a tap in a throwaway namespace so its virtio-net device exists, and
        save it paused: its disk overlay, memory and QEMU command line."""
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = directory.parent / f".b{uuid.uuid4().hex[:8]}"
        staging.mkdir(mode=0o700)
        netns = f"ember-tpl-{uuid.uuid4().hex[:8]}" if self.network is not None else None
        template_spec = dataclasses.replace(
            spec, session_id=staging.name, hostname="sandbox", network_policy=None
        )
        channels: HostChannels | None = None
        try:
            config = await asyncio.to_thread(self._prepare, staging, template_spec)
            argv = qemu_argv(config)
            if netns is not None:
                await _namespace_with_tap(netns)
                argv = qemu_argv(dataclasses.replace(config, tap=TAP))
            await _daemonize(_in_namespace(netns, argv), staging / "qemu.log")
            channels = HostChannels(str(staging / "port.sock"), str(staging / "agent.sock"))
            await channels.start()
            await self._wait_for_agent(staging)
            await self._zero_free_memory(staging)
            await self._save_memory(staging)
            pid = self._pid(staging)
            while pid is not None and proc.pid_alive(pid):
                await asyncio.sleep(0.01)
            (staging / "qemu.argv.json").write_text(
                json.dumps([arg.replace(str(staging), SESSION_DIR) for arg in argv])
            )
            for name in ("port.sock", "agent.sock", "qmp.sock", "qemu.pid"):
                (staging / name).unlink(missing_ok=True)
            try:
                os.rename(staging, directory)
            except OSError:
                if not (directory / "memory.bin").exists():
                    raise
                # Another emberd sharing this cache built it meanwhile: use theirs.
        finally:
            if channels is not None:
                await channels.close()
            pid = self._pid(staging)
            if pid is not None and proc.pid_alive(pid):
                os.kill(pid, signal.SIGKILL)
            if netns is not None:
                await proc.run_async(["ip", "netns", "del", netns], check=False)
            if staging.exists():
                await asyncio.to_thread(mounts.remove_tree, str(staging))

    async def _zero_free_memory(self, sdir: Path) -> None:
        """Leave as little as possible for every restore to load: the guest drops
        its unmapped page cache, then has its free memory zeroed (the kernel
        zeroes pages it hands out, so a process that takes almost all free pages
        and lets them go leaves zeros behind, which the migration skips; memory
        freed during boot, the initramfs's for one, would be saved otherwise)."""
        agent = AgentClient(str(sdir / "agent.sock"))
        cmd_id = f"ember-zero-{uuid.uuid4().hex[:8]}"
        await agent.exec(cmd_id, ["/usr/bin/python3", "-c", ZERO_FREE_MEMORY], user="root")
        status = await asyncio.wait_for(agent.wait(cmd_id), AGENT_READY_TIMEOUT_S)
        if status.exit_code != 0:
            raise EmberRuntimeError(f"zeroing a template's free memory failed ({status.exit_code})")

    async def _start_from_template(self, spec: SessionSpec, sdir: Path, template: Path) -> None:
        """Restore a copy of the template, then give it this session's details."""
        await self._restore(spec, sdir, await self._copy_template(template, sdir))

    async def _copy_template(self, template: Path, directory: Path) -> list[str]:
        """The template's disk overlay (copied), memory file (a hard link: the
        restore only reads it) and command line, for a guest in `directory`."""
        await self._copy_disk(template, directory)
        os.link(template / "memory.bin", directory / "memory.bin")
        argv = [
            a.replace(SESSION_DIR, str(directory))
            for a in json.loads((template / "qemu.argv.json").read_text())
        ]
        (directory / "qemu.argv.json").write_text(json.dumps(argv))
        return argv

    @staticmethod
    async def _copy_disk(source: Path, target: Path) -> None:
        await proc.run_async(
            ["cp", "--sparse=always", str(source / "disk.qcow2"), str(target / "disk.qcow2")],
            timeout_s=600,
        )

    def _backing(self, spec: SessionSpec) -> tuple[Path, str]:
        if spec.top_layer:
            layer = self.layers.get(spec.top_layer)
            if layer.format != "qcow2":
                raise SessionStartError(
                    f"snapshot layer {layer.layer_id} was made by the container runtime; "
                    "a microVM cannot start from it"
                )
            return self.layers.disk(spec.top_layer), "qcow2"
        image = self.images.get(spec.image_id)
        if image is None:
            raise SessionStartError(f"no image {spec.image_id}")
        disk_mib = spec.resources.disk_mib
        return root_disk(self.data_dir, image, self.id_shift, disk_mib).resolve(), "raw"

    def _prepare(self, sdir: Path, spec: SessionSpec) -> VmConfig:
        self.prepare()
        assert self._kernel is not None and self._initramfs is not None and self._accel
        backing, backing_format = self._backing(spec)
        proc.run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", backing_format,
             "-b", str(backing), str(sdir / "disk.qcow2")],
            timeout_s=60,
        )  # fmt: skip
        resources = spec.resources
        kernel_args = {
            "time": str(int(time.time())),
            "user": DEFAULT_USER,
            "workdir": DEFAULT_WORKDIR,
            "hostname": spec.hostname,
        }
        tap = None
        if self.network is not None and spec.network_policy is not None:
            network = self.network.attach_tap(spec.session_id, spec.network_policy, TAP)
            kernel_args["address"] = f"{network.lease.sandbox_ip}/30"
            kernel_args["gateway"] = str(network.lease.host_ip)
            tap = TAP
        config = VmConfig(
            kernel=self._kernel.vmlinuz,
            initramfs=self._initramfs,
            accel=self._accel,
            vcpus=max(1, math.ceil(resources.vcpus)),
            memory_mib=resources.memory_limit_mib,
            disk=sdir / "disk.qcow2",
            agent_socket=sdir / "port.sock",
            qmp_socket=sdir / "qmp.sock",
            console_log=sdir / "console.log",
            pidfile=sdir / "qemu.pid",
            kernel_args=kernel_args,
            tap=tap,
        )
        return config

    async def _attach(self, session_id: str) -> None:
        """Start the agent channels' host end for a running VM (at start or adoption)."""
        sdir = self._dir(session_id)
        old = self._channels.pop(session_id, None)
        if old is not None:
            await old.close()
        channels = HostChannels(str(sdir / "port.sock"), str(sdir / "agent.sock"))
        await channels.start()
        self._channels[session_id] = channels

    async def _wait_for_agent(self, sdir: Path) -> None:
        client = AgentClient(str(sdir / "agent.sock"))
        deadline = time.monotonic() + AGENT_READY_TIMEOUT_S
        while True:
            try:
                await asyncio.wait_for(client.hello(), 5)
                return
            except (TimeoutError, AgentUnavailableError) as exc:
                if time.monotonic() > deadline or not self._pid_alive(sdir):
                    console = (sdir / "console.log").read_text(errors="replace")[-2000:]
                    raise AgentUnavailableError(
                        f"the agent did not answer: {exc}; console: {console}"
                    ) from exc
                await asyncio.sleep(0.01)

    # -- stop, freeze, discard --------------------------------------------------

    @staticmethod
    def _pid(sdir: Path) -> int | None:
        try:
            return int((sdir / "qemu.pid").read_text())
        except (FileNotFoundError, ValueError):
            return None

    def _pid_alive(self, sdir: Path) -> bool:
        pid = self._pid(sdir)
        return pid is not None and proc.pid_alive(pid)

    # -- pause and resume, with memory ------------------------------------------

    @staticmethod
    async def _qmp_at(sdir: Path) -> QMPClient:
        qmp = QMPClient(f"ember-{sdir.name}")
        await asyncio.wait_for(qmp.connect(str(sdir / "qmp.sock")), 5)
        return qmp

    async def pause(self, session_id: str) -> None:
        """Save the running VM's memory and device state to `memory.bin`, then end
        the VM and give its network back; its disk stays. `resume` brings it back
        as it was (with a network again)."""
        async with self._lock(session_id):
            sdir = self._dir(session_id)
            if not self._pid_alive(sdir):
                raise EmberRuntimeError(f"session {session_id} is not running")
            # What the guest wrote so far reaches its disk, as on a stop: a paused
            # session that is stopped instead of resumed keeps it.
            await self._sync_guest(session_id)
            try:
                await self._save_memory(sdir)
            except EmberRuntimeError:
                raise
            except Exception as exc:  # QMP or the file: the VM runs on (or died)
                raise EmberRuntimeError(f"saving the memory of {session_id} failed: {exc}") from exc
            await self._end(session_id)
            (sdir / "paused").touch()

    async def _save_memory(self, sdir: Path) -> None:
        """Stop the VM and migrate its state to `memory.bin`; then it may end."""
        staged = sdir / "memory.bin.tmp"
        qmp = await self._qmp_at(sdir)
        try:
            await qmp.execute("stop")
            try:
                # QEMU 7.2 migrates to a file through a command; `file:` came later.
                await qmp.execute("migrate", {"uri": f"exec:cat > {staged}"})
                while True:
                    state = await qmp.execute("query-migrate")
                    status = state.get("status") if isinstance(state, dict) else None
                    if status == "completed":
                        break
                    if status in ("failed", "cancelled"):
                        raise EmberRuntimeError(f"saving the memory of {sdir.name} {status}")
                    await asyncio.sleep(0.01)
            except BaseException:
                with contextlib.suppress(Exception):  # the session runs on, unsaved
                    await asyncio.wait_for(qmp.execute("cont"), 2)
                staged.unlink(missing_ok=True)
                raise
            with contextlib.suppress(Exception):
                await asyncio.wait_for(qmp.execute("quit"), 2)
        finally:
            with contextlib.suppress(Exception):
                await qmp.disconnect()
        os.rename(staged, sdir / "memory.bin")

    def paused(self, session_id: str) -> bool:
        sdir = self._dir(session_id)
        return (sdir / "paused").exists() and (sdir / "memory.bin").exists()

    async def resume(
        self, session_id: str, network_policy: Mapping[str, Any] | None = None
    ) -> SessionInfo:
        """Start a paused VM again from its memory: processes, open files and
        memory as they were; the guest's clock is set, its RNG reseeded and its
        network attached again (with `network_policy`, else its last one)."""
        async with self._lock(session_id):
            if not self.paused(session_id):
                raise EmberRuntimeError(f"session {session_id} is not paused")
            info = self._read_info(session_id)
            spec = info.spec
            if network_policy is not None:
                spec = dataclasses.replace(spec, network_policy=dict(network_policy))
            sdir = self._dir(session_id)
            argv = json.loads((sdir / "qemu.argv.json").read_text())
            try:
                await self._restore(spec, sdir, argv)
            except BaseException as exc:
                await self._end(session_id)  # still paused: memory.bin stays
                if isinstance(exc, Exception) and not isinstance(exc, EmberRuntimeError):
                    raise EmberRuntimeError(f"resuming {session_id} failed: {exc}") from exc
                raise
            (sdir / "paused").unlink()
            info = dataclasses.replace(info, spec=spec, status=SessionStatus.RUNNING)
            (sdir / "session.json").write_text(json.dumps(info_to_json(info)))
            return info

    async def _restore(self, spec: SessionSpec, sdir: Path, argv: list[str]) -> None:
        """QEMU from `memory.bin`, running, its agent answering, clock and RNG fresh,
        the session's hostname and network; then `memory.bin` goes (a template's
        or fork source's stays: this was a link to it)."""
        session_id = spec.session_id
        if self.network is not None and spec.network_policy is not None:
            await asyncio.to_thread(self.network.attach_tap, session_id, spec.network_policy, TAP)
        await self._launch(session_id, sdir, argv, incoming=True)
        # The host end first: a guest that found nobody there would drop its
        # channels and poll again (agent/channels.py), a wasted 50 ms.
        await self._attach(session_id)
        await self._cont_when_loaded(sdir)
        # No hello first: `restored` itself waits for the agent (a round trip less).
        await self._after_restore(session_id, spec.hostname)
        (sdir / "memory.bin").unlink()

    async def _cont_when_loaded(self, sdir: Path) -> None:
        """Let an incoming VM run once its memory has loaded."""
        qmp = await self._qmp_at(sdir)
        try:
            while True:
                state = await qmp.execute("query-status")
                if isinstance(state, dict) and state.get("status") != "inmigrate":
                    break
                await asyncio.sleep(0.005)
            await qmp.execute("cont")
        finally:
            with contextlib.suppress(Exception):
                await qmp.disconnect()

    # -- warm guests (warm.py) ----------------------------------------------------

    async def _make_warm(self, template: Path, wdir: Path) -> WarmGuest:
        """A guest restored from `template` into `wdir`, running, in a namespace of
        its own with its tap when networked, its first steps taken (a `restored`
        and a command: under TCG, code runs slowly the first time)."""
        wdir.mkdir(mode=0o700)
        argv = await self._copy_template(template, wdir)
        netns = None
        if self.network is not None:
            netns = warm_netns(wdir)
            await _namespace_with_tap(netns)
        launch = [*argv, "-incoming", f"exec:cat {wdir / 'memory.bin'}"]
        await _daemonize(_in_namespace(netns, launch), wdir / "qemu.log")
        channels = HostChannels(str(wdir / "port.sock"), str(wdir / "agent.sock"))
        await channels.start()
        try:
            await self._cont_when_loaded(wdir)
            agent = AgentClient(str(wdir / "agent.sock"))
            await asyncio.wait_for(
                agent.restored(time.time(), os.urandom(64), "sandbox"), SYNC_TIMEOUT_S
            )
            await agent.exec("ember-warm-up", ["/bin/true"])
            await asyncio.wait_for(agent.wait("ember-warm-up"), SYNC_TIMEOUT_S)
            (wdir / "memory.bin").unlink()
            pid = self._pid(wdir)
            if pid is None:
                raise EmberRuntimeError(f"the warm guest in {wdir} has no pid file")
        except BaseException:
            await channels.close()
            raise
        return WarmGuest(wdir, netns, channels, pid)

    async def _start_warm(self, spec: SessionSpec, sdir: Path, guest: WarmGuest) -> None:
        """Make a warm guest this session's: its directory, namespace, name, address,
        clock and randomness (the RNG reseeded: all came from one template)."""
        session_id = spec.session_id
        os.rename(guest.directory, sdir)  # QEMU's open files and sockets move along
        argv = json.loads((sdir / "qemu.argv.json").read_text())
        renamed = [a.replace(str(guest.directory), str(sdir)) for a in argv]
        (sdir / "qemu.argv.json").write_text(json.dumps(renamed))
        self._channels[session_id] = guest.channels
        if guest.netns is not None:
            try:
                if self.network is not None and spec.network_policy is not None:
                    await asyncio.to_thread(
                        self.network.attach_tap,
                        session_id,
                        spec.network_policy,
                        TAP,
                        adopt_pid=guest.pid,
                    )
            finally:  # the session's name holds the namespace now (or nothing does)
                await proc.run_async(["ip", "netns", "del", guest.netns], check=False)
        await self._after_restore(session_id, spec.hostname)

    async def fork(self, session_id: str, spec: SessionSpec) -> SessionInfo:
        """A new running session from a paused one: its disk copied, its memory
        shared (read only, by the incoming migration), with `spec`'s id, hostname
        and network. The restore reseeds the RNG, so forks draw different randomness.
        The source stays paused."""
        if spec.resources != self._read_info(session_id).spec.resources:
            raise EmberRuntimeError("a fork with memory keeps its source's vCPUs and memory")
        async with self._lock(session_id):
            sdir, new = self._dir(session_id), self._dir(spec.session_id)
            if not self.paused(session_id):
                raise EmberRuntimeError(f"session {session_id} is not paused")
            new.mkdir(mode=0o700)
            try:
                await self._copy_disk(sdir, new)
                os.link(sdir / "memory.bin", new / "memory.bin")
                argv = json.loads((sdir / "qemu.argv.json").read_text())
                renamed = [arg.replace(str(sdir), str(new)) for arg in argv]
                (new / "qemu.argv.json").write_text(json.dumps(renamed))
                info = SessionInfo(
                    spec.session_id, self.name, SessionStatus.PAUSED, int(time.time() * 1000),
                    DEFAULT_USER, DEFAULT_WORKDIR, spec,
                )  # fmt: skip
                (new / "session.json").write_text(json.dumps(info_to_json(info)))
                (new / "paused").touch()
            except BaseException:
                await asyncio.to_thread(mounts.remove_tree, str(new))
                raise
        try:
            return await self.resume(spec.session_id)
        except BaseException:
            await self.discard(spec.session_id)
            raise

    async def _after_restore(self, session_id: str, hostname: str) -> None:
        """A restored guest's clock is the save's, its RNG state a copy, its name and
        address another session's (a fork's source's, a template's none, a paused
        session's given back): the agent sets the clock, reseeds the RNG with the
        host's randomness, and takes this session's hostname and address."""
        lease = self.network.lease(session_id) if self.network is not None else None
        network = (str(lease.sandbox_ip), 30, str(lease.host_ip)) if lease is not None else None
        await asyncio.wait_for(
            self.agent(session_id).restored(time.time(), os.urandom(64), hostname, network),
            SYNC_TIMEOUT_S,
        )

    async def _kill(self, session_id: str) -> None:
        """End the VM: QMP `quit`, then SIGKILL if it lingers."""
        sdir = self._dir(session_id)
        channels = self._channels.pop(session_id, None)
        if channels is not None:
            await channels.close()
        pid = self._pid(sdir)
        if pid is None or not proc.pid_alive(pid):
            return
        with contextlib.suppress(Exception):
            qmp = QMPClient(f"ember-{session_id}")
            await asyncio.wait_for(qmp.connect(str(sdir / "qmp.sock")), 2)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(qmp.execute("quit"), 2)
            with contextlib.suppress(Exception):
                await qmp.disconnect()
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while proc.pid_alive(pid) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if proc.pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            while proc.pid_alive(pid):
                await asyncio.sleep(0.01)

    async def _end(self, session_id: str) -> None:
        """End the VM and take its network down."""
        await self._kill(session_id)
        if self.network is not None:
            await asyncio.to_thread(self.network.detach, session_id)

    async def stop(self, session_id: str) -> None:
        await asyncio.shield(self._stop(session_id))

    async def _stop(self, session_id: str) -> None:
        async with self._lock(session_id):
            sdir = self._dir(session_id)
            if not sdir.exists():
                raise SessionNotFoundError(f"no session {session_id}")
            await self._sync_guest(session_id)
            await self._end(session_id)
            # A paused session's memory goes: its disk was synced when it paused.
            for name in ("paused", "memory.bin"):
                (sdir / name).unlink(missing_ok=True)
            (sdir / "stopped").touch()

    async def _sync_guest(self, session_id: str) -> None:
        """Flush the guest's page cache to its disk before the VM ends (a container's
        writes are the host kernel's already; a guest's are not)."""
        if not self._pid_alive(self._dir(session_id)):
            return
        agent = self.agent(session_id)
        cmd_id = f"ember-sync-{int(time.time() * 1000)}"
        with contextlib.suppress(Exception):
            await asyncio.wait_for(agent.exec(cmd_id, ["sync"], user="root"), SYNC_TIMEOUT_S)
            await asyncio.wait_for(agent.wait(cmd_id), SYNC_TIMEOUT_S)

    async def freeze(self, session_id: str, layer_id: str) -> FrozenLayer:
        async with self._lock(session_id):
            sdir = self._dir(session_id)
            info = self._read_info(session_id)
            if self._pid_alive(sdir):
                raise SessionStartError(f"session {session_id} is running; stop it before freezing")
            parent = info.spec.top_layer
            depth = 1 + (self.layers.get(parent).depth if parent else 0)
            if parent and depth > self.layers.max_depth:
                await self._flatten(sdir / "disk.qcow2")
                parent = None
            layer = await asyncio.to_thread(
                self.layers.publish,
                str(sdir / "disk.qcow2"),
                layer_id=layer_id,
                parent=parent,
                image_id=info.spec.image_id,
                disk_format="qcow2",
            )
            await asyncio.to_thread(mounts.remove_tree, str(sdir))
            self._locks.pop(session_id, None)
            return FrozenLayer(layer.layer_id, layer.parent, layer.size_bytes)

    async def _flatten(self, overlay: Path) -> None:
        """Rebase the overlay straight onto the chain's root disk: qemu-img copies in
        whatever its snapshot layers held, so the chain stops growing."""
        shown = await proc.run_async(
            ["qemu-img", "info", "--backing-chain", "--output=json", "-U", str(overlay)],
            timeout_s=60,
        )
        base = json.loads(shown.stdout)[-1]  # the bottom of the chain: the image's disk
        if base.get("format") != "raw":
            raise EmberRuntimeError(f"the chain of {overlay} does not end in a root disk")
        await proc.run_async(
            ["qemu-img", "rebase", "-f", "qcow2", "-b", base["filename"], "-F", "raw",
             str(overlay)],
            timeout_s=1800,
        )  # fmt: skip

    async def discard(self, session_id: str) -> None:
        await asyncio.shield(self._discard(session_id))

    async def _discard(self, session_id: str) -> None:
        async with self._lock(session_id):
            await self._end(session_id)
            await asyncio.to_thread(mounts.remove_tree, str(self._dir(session_id)))
            self._locks.pop(session_id, None)

    # -- inspection -------------------------------------------------------------

    def _read_info(self, session_id: str) -> SessionInfo:
        try:
            data = json.loads((self._dir(session_id) / "session.json").read_text())
        except FileNotFoundError:
            raise SessionNotFoundError(f"no session {session_id}") from None
        return info_from_json(data)

    async def alive(self, session_id: str) -> bool:
        return self._pid_alive(self._dir(session_id))

    async def info(self, session_id: str) -> SessionInfo:
        info = self._read_info(session_id)
        running = self._pid_alive(self._dir(session_id))
        if running and session_id not in self._channels:
            await self._attach(session_id)  # adopted after a restart of emberd
        status = SessionStatus.RUNNING if running else SessionStatus.STOPPED
        if not running and self.paused(session_id):
            status = SessionStatus.PAUSED
        return SessionInfo(
            info.session_id, info.runtime, status, info.started_at_ms, info.user, info.cwd,
            info.spec,
        )  # fmt: skip

    async def usage(self, session_id: str) -> ResourceUsage:
        sdir = self._dir(session_id)
        if not sdir.exists():
            raise SessionNotFoundError(f"no session {session_id}")
        pid = self._pid(sdir)
        cpu_ms = memory = 0
        if pid is not None and proc.pid_alive(pid):
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                ticks = os.sysconf("SC_CLK_TCK")
                cpu_ms = (int(fields[11]) + int(fields[12])) * 1000 // ticks
                memory = int(fields[21]) * os.sysconf("SC_PAGE_SIZE")
        disk_used = (
            (sdir / "disk.qcow2").stat().st_blocks * 512 if (sdir / "disk.qcow2").exists() else 0
        )
        ingress = egress = 0
        if self.network is not None:
            ingress, egress = await asyncio.to_thread(self.network.transfer, session_id)
        return ResourceUsage(cpu_ms, memory, memory, 0, disk_used, ingress, egress)

    async def sessions(self) -> list[str]:
        """Every session on disk; running VMs get their agent channels back (after a
        restart of emberd, recovery asks their agents whether they answer)."""
        found = sorted(
            p.name for p in self.vms_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )
        for session_id in found:
            if session_id not in self._channels and self._pid_alive(self._dir(session_id)):
                with contextlib.suppress(OSError):
                    await self._attach(session_id)
        return found

    async def release(self, session_id: str) -> None:
        """Let go of a running session's agent channels; its VM runs on (what an
        exiting emberd leaves behind, for the next one to adopt)."""
        channels = self._channels.pop(session_id, None)
        if channels is not None:
            await channels.close()

    def keep_warm(self, size: int) -> None:
        """Keep `size` warm guests per template in use (warm.py)."""
        self.warm.close()
        self.warm = WarmPool(self.vms_dir, size if self.templates else 0, self._make_warm)

    def close(self) -> None:
        """End the warm guests kept for future sessions; sessions' VMs outlive emberd."""
        self.warm.close()

    def address(self, session_id: str) -> str | None:
        return self.network.address(session_id) if self.network is not None else None

    async def set_network_policy(self, session_id: str, policy: Mapping[str, Any]) -> None:
        if self.network is None:
            raise EmberRuntimeError("networking is off on this server")
        await asyncio.to_thread(self.network.apply, session_id, policy)

    async def restore_networks(self, policies: Mapping[str, Mapping[str, Any]]) -> None:
        return None  # the network manager is shared: the container runtime restores it
