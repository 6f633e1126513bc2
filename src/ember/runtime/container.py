"""The container runtime: an OCI bundle run by runc over an overlay root.

Per session, under `<data_dir>/sessions/<id>/` (mode 0700, never visible to
the session):

    disk.img      the writable layer: a sparse ext4 image (the disk limit)
    upper/        disk.img mounted; holds the overlay's upper/ and work/
    rootfs/       the overlay: image + snapshot layers (read-only, shared
                  mounts under <data_dir>/layers/<id>/mnt) + upper
    etc/          hostname, resolv.conf, bind-mounted read-only (/etc/hosts is
                  upper/hosts, on the session disk, read-write)
    bundle/       config.json for runc
    agent.sock    the agent's listening socket (bound here, passed as fd 0)
    agent.log     the agent's stdout and stderr
    session.json  the spec and start time, for info() and recovery
"""

from __future__ import annotations

import asyncio
import compileall
import contextlib
import json
import os
import resource
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

import ember.agent
from ember.image import ImageStore
from ember.network import NetworkManager
from ember.network.trust import TRUST_ENV
from ember.snapshots import LayerStore

from . import cgroups, disk, mounts, oci, proc, seccomp
from .agent_client import AgentClient, AgentUnavailableError
from .base import (
    EmberRuntimeError,
    FrozenLayer,
    Resources,
    ResourceUsage,
    SessionInfo,
    SessionNotFoundError,
    SessionSpec,
    SessionStartError,
    SessionStatus,
    UnsupportedError,
    info_from_json,
    info_to_json,
)
from .disk_pool import DiskPool
from .failures import start_error

CONTAINER_PREFIX = "ember-"
CGROUP_PARENT = "/ember"
AGENT_READY_TIMEOUT_S = 15.0
RUNC_TIMEOUT_S = 30.0
RUNC_STATE_DIR = "/run/runc"  # runc's default --root, where it records each container
NOFILE = 1048576
HOSTS_FILE = "hosts"  # on the session disk, beside the overlay's upper and work
OVERLAY_OPTIONS = ("redirect_dir=off", "metacopy=off", "index=off", "xino=off")


# Host uid/gid that a session's root maps to; sessions share the range
# [DEFAULT_ID_SHIFT, DEFAULT_ID_SHIFT + 65536), far above ordinary users and the
# usual /etc/subuid allocations.
DEFAULT_ID_SHIFT = 1_000_000_000


def default_id_shift() -> int:
    return DEFAULT_ID_SHIFT if userns_available() else 0


def userns_available() -> bool:
    try:
        with open("/proc/sys/user/max_user_namespaces", encoding="ascii") as f:
            return int(f.read()) > 0
    except OSError:
        return False


class ContainerRuntime:
    """Sessions as runc containers. See the module docstring for the on-disk layout."""

    name = "container"

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        images: ImageStore | None = None,
        layers: LayerStore | None = None,
        id_shift: int = 0,
        no_new_privileges: bool = True,
        seccomp_profile: str = seccomp.PROFILE_PATH,
        runc: str = "runc",
        pool_size: int = 2,
        network: NetworkManager | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.sessions_dir = self.data_dir / "sessions"
        self.templates_dir = self.data_dir / "templates"
        self.id_shift = id_shift
        self.network = network
        self._private_dir(self.data_dir)
        self._private_dir(self.sessions_dir)
        self._check_traversable(self.data_dir)
        self.images = images or ImageStore(data_dir)
        self.layers = layers or LayerStore(data_dir)
        self.no_new_privileges = no_new_privileges
        self.runc = runc
        self.agent_dir = str(Path(ember.agent.__file__).parent)
        # Bytecode for the agent, used inside sessions when the image's python
        # is the same minor version as ours; harmless otherwise.
        compileall.compile_dir(self.agent_dir, quiet=1)
        self._seccomp = seccomp.oci_seccomp(
            seccomp.load_docker_profile(seccomp_profile), oci.DEFAULT_CAPABILITIES
        )
        self._locks: dict[str, asyncio.Lock] = {}
        self.pool = DiskPool(
            self.data_dir / "pool",
            self.templates_dir,
            size_mib=Resources().disk_mib,
            root_id=id_shift,
            target=pool_size,
        )
        self.pool.refill()

    # -- paths --------------------------------------------------------------

    def _private_dir(self, path: Path) -> None:
        """A directory only host root and the sessions' namespaced root can traverse.

        runc mounts the rootfs from inside the user namespace, so the
        namespaced root (host uid `id_shift`) needs search permission on
        the path; through the group, not "others", so host users get none.
        """
        path.mkdir(parents=True, exist_ok=True)
        os.chown(path, 0, self.id_shift)
        os.chmod(path, 0o710 if self.id_shift else 0o700)

    def _dir(self, session_id: str) -> Path:
        if not session_id or "/" in session_id or session_id.startswith("."):
            raise SessionNotFoundError(f"invalid session id {session_id!r}")
        return self.sessions_dir / session_id

    def _check_traversable(self, path: Path) -> None:
        """Every directory above the data dir must let the namespaced root pass."""
        if not self.id_shift:
            return
        for parent in path.resolve().parents:
            st = os.stat(parent)
            mode = st.st_mode
            if not (mode & 0o001 or (st.st_gid == self.id_shift and mode & 0o010)):
                raise EmberRuntimeError(
                    f"{parent} is not searchable by others (mode {oct(mode & 0o777)}); "
                    f"sessions in user namespaces cannot reach {path}: use a data directory "
                    "below world-searchable directories, e.g. /var/lib/ember"
                )

    @staticmethod
    def container_id(session_id: str) -> str:
        return CONTAINER_PREFIX + session_id

    @staticmethod
    def cgroups_path(session_id: str) -> str:
        return f"{CGROUP_PARENT}/{session_id}"

    def _lock(self, session_id: str) -> asyncio.Lock:
        return self._locks.setdefault(session_id, asyncio.Lock())

    def agent(self, session_id: str) -> AgentClient:
        return AgentClient(str(self._dir(session_id) / "agent.sock"))

    # -- start --------------------------------------------------------------

    async def start(self, spec: SessionSpec) -> SessionInfo:
        """Start a session. Cancelling waits for the start to finish, then undoes it,
        so an interrupted start never leaves mounts, containers or cgroups behind."""
        task = asyncio.ensure_future(self._start(spec))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            with contextlib.suppress(BaseException):
                await task
            if task.done() and not task.cancelled() and task.exception() is None:
                await asyncio.shield(self.discard(spec.session_id))
            raise

    async def _start(self, spec: SessionSpec) -> SessionInfo:
        async with self._lock(spec.session_id):
            sdir = self._dir(spec.session_id)
            if sdir.exists():
                raise SessionStartError(f"session {spec.session_id} already exists")
            image = self.images.get(spec.image_id)
            if image is None:
                raise SessionStartError(f"no image {spec.image_id!r}; run `ember image build`")
            if int(image.recipe.get("id_shift", 0)) != self.id_shift:  # type: ignore[call-overload]
                raise SessionStartError(
                    f"image {spec.image_id} was built for id shift {image.recipe.get('id_shift')}, "
                    f"this runtime uses {self.id_shift}; rebuild it with `ember image build`"
                )
            user, workdir = str(image.recipe["user"]), str(image.recipe["workdir"])
            chain = self.layers.chain(spec.top_layer) if spec.top_layer else []
            if any(layer.format != "ext4" for layer in chain):
                raise SessionStartError(
                    f"snapshot layer {spec.top_layer} was made by the microVM runtime; "
                    "a container cannot start from it"
                )
            self._private_dir(sdir)
            started_at_ms = int(time.time() * 1000)
            try:
                await asyncio.to_thread(self._prepare_rootfs, sdir, spec, str(image.rootfs), chain)
                config = self._config(sdir, spec, user, workdir)
                bundle = sdir / "bundle"
                bundle.mkdir()
                (bundle / "config.json").write_text(json.dumps(config))
                await self._run_container(sdir, spec.session_id, self._network_hook(spec))
                await self._wait_for_agent(sdir)
            except BaseException as exc:
                with contextlib.suppress(Exception):
                    await self._teardown(spec.session_id)
                    await asyncio.to_thread(mounts.remove_tree, str(sdir))
                failure = start_error(exc, f"session {spec.session_id}")
                if failure is not None:
                    raise failure from exc
                raise
            info = SessionInfo(
                spec.session_id,
                self.name,
                SessionStatus.RUNNING,
                started_at_ms,
                user,
                workdir,
                spec,
            )
            (sdir / "session.json").write_text(json.dumps(info_to_json(info)))
            return info

    def _prepare_rootfs(
        self, sdir: Path, spec: SessionSpec, image_rootfs: str, chain: list[Any]
    ) -> None:
        shift = self.id_shift
        pooled = spec.resources.disk_mib == self.pool.size_mib and self.pool.take(sdir)
        if not pooled:
            disk.create_disk(
                str(sdir / "disk.img"),
                spec.resources.disk_mib,
                root_id=shift,
                templates=str(self.templates_dir),
            )
            disk.mount_disk(str(sdir / "disk.img"), str(sdir / "upper"), read_only=False)
        upper, work = disk.prepare_upper(str(sdir / "upper"), root_id=shift)
        # Top first, as overlayfs wants; the layers' shared read-only mounts.
        lowers = [self.layers.upper_dir(layer.layer_id) for layer in chain]
        trust = self._trust_layer(image_rootfs)
        if trust is not None:
            lowers.append(str(trust))
        lowers.append(image_rootfs)
        rootfs = sdir / "rootfs"
        rootfs.mkdir()
        mounts.mount(
            "overlay",
            str(rootfs),
            fstype="overlay",
            options=[
                f"lowerdir={':'.join(lowers)}",
                f"upperdir={upper}",
                f"workdir={work}",
                *OVERLAY_OPTIONS,
            ],
        )
        etc = sdir / "etc"
        etc.mkdir()
        (etc / "hostname").write_text(spec.hostname + "\n")
        (etc / "resolv.conf").write_text("")  # filled in by the network layer when attached
        # /etc/hosts is the session's to edit (as in Docker), so it lives on
        # the session's own disk, within its limit; each session starts anew.
        hosts = os.open(
            os.path.join(str(sdir / "upper"), HOSTS_FILE),
            os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC,
            0o644,
        )
        with os.fdopen(hosts, "w") as f:
            f.write(
                "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n"
                f"127.0.1.1\t{spec.hostname}\n"
            )
            os.fchown(f.fileno(), shift, shift)

    def _trust_layer(self, image_rootfs: str) -> Path | None:
        """With networking, the layer that makes the session trust the egress CA."""
        if self.network is None:
            return None
        return self.network.trust_layer(Path(image_rootfs), self.id_shift)

    def _config(self, sdir: Path, spec: SessionSpec, user: str, workdir: str) -> dict[str, Any]:
        resources = spec.resources
        return oci.oci_config(
            oci.ContainerConfig(
                rootfs=str(sdir / "rootfs"),
                hostname=spec.hostname,
                agent_dir=self.agent_dir,
                agent_user=user,
                agent_workdir=workdir,
                cgroups_path=self.cgroups_path(spec.session_id),
                vcpus=resources.vcpus,
                memory_mib=resources.memory_limit_mib,
                pids_max=resources.pids_max,
                seccomp=self._seccomp,
                id_shift=self.id_shift,
                no_new_privileges=self.no_new_privileges,
                netns_path=spec.netns_path,
                nofile=min(NOFILE, resource.getrlimit(resource.RLIMIT_NOFILE)[1]),
                bind_files={
                    f"/etc/{n}": str(sdir / "etc" / n) for n in ("hostname", "resolv.conf")
                },
                writable_files={"/etc/hosts": str(sdir / "upper" / HOSTS_FILE)},
                env=TRUST_ENV if self.network is not None else {},
            )
        )

    def _network_hook(self, spec: SessionSpec) -> Callable[[int], Awaitable[None]] | None:
        """What to do between `runc create` and `runc start`: give the session its network."""
        network, policy = self.network, spec.network_policy
        if network is None or policy is None or spec.netns_path:
            return None

        resolv_conf = self._dir(spec.session_id) / "etc" / "resolv.conf"

        async def attach(pid: int) -> None:
            await asyncio.to_thread(network.attach, spec.session_id, policy, pid)
            # In place: the file is bind-mounted already.
            resolv_conf.write_text(network.resolv_conf(spec.session_id))

        return attach

    async def _runc(self, sdir: Path, argv: list[str], listener: socket.socket) -> None:
        with open(sdir / "agent.log", "ab") as log:
            child = await asyncio.create_subprocess_exec(
                self.runc,
                *argv,
                stdin=listener.fileno(),
                stdout=log,
                stderr=log,
                env=dict(proc.BASE_ENV),
            )
            try:
                await asyncio.wait_for(child.wait(), RUNC_TIMEOUT_S)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    child.kill()
                await child.wait()
                raise
        if child.returncode != 0:
            raise proc.ProcessError(["runc", *argv], child.returncode, _tail(sdir / "agent.log"))

    async def _run_container(
        self, sdir: Path, session_id: str, before_start: Callable[[int], Awaitable[None]] | None
    ) -> None:
        """`runc run --detach`; or, with `before_start`, `runc create`, the hook, `runc start`.

        A session's network namespace must be the one runc makes inside its
        user namespace (sysfs cannot be mounted otherwise), so its network is
        added between create and start.
        """
        # The agent inherits the listening socket as its stdin: runc passes a
        # detached container's stdio through, which needs no fd juggling.
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            listener.bind(str(sdir / "agent.sock"))
            listener.listen(64)
            cid = self.container_id(session_id)
            bundle = ["--bundle", str(sdir / "bundle"), "--pid-file", str(sdir / "runc.pid")]
            if before_start is None:
                await self._runc(sdir, ["run", "--detach", *bundle, cid], listener)
            else:
                await self._runc(sdir, ["create", *bundle, cid], listener)
                await before_start(int((sdir / "runc.pid").read_text()))
                await self._runc(sdir, ["start", cid], listener)
        finally:
            listener.close()
        # Best effort: shield the agent from the OOM killer. Lowering the
        # score needs CAP_SYS_RESOURCE on the host (runc's own oomScoreAdj
        # fails inside a user namespace); the agent also raises its commands
        # to 1000, which is what protects it where this write is refused.
        agent_pid = int((sdir / "runc.pid").read_text())
        with contextlib.suppress(OSError), open(f"/proc/{agent_pid}/oom_score_adj", "w") as f:
            f.write("-1000")

    async def _wait_for_agent(self, sdir: Path) -> None:
        client = AgentClient(str(sdir / "agent.sock"))
        try:
            await asyncio.wait_for(client.hello(), AGENT_READY_TIMEOUT_S)
        except (TimeoutError, AgentUnavailableError) as exc:
            log = _tail(sdir / "agent.log").decode(errors="replace")
            raise AgentUnavailableError(
                f"the agent did not answer: {exc}; agent.log: {log}"
            ) from exc

    # -- stop, freeze, discard ----------------------------------------------

    async def _teardown(self, session_id: str) -> None:
        """Kill the container, remove it and its cgroup, take its mounts down; keep disk.img.

        `runc delete --force` sleeps 100 ms after its kill; killing, waiting for
        the init to exit, then deleting takes ~10 ms.
        """
        sdir = self._dir(session_id)
        cid = self.container_id(session_id)
        await proc.run_async(
            [self.runc, "kill", cid, "KILL"], timeout_s=RUNC_TIMEOUT_S, check=False
        )
        await _wait_for_exit(sdir / "runc.pid", timeout_s=RUNC_TIMEOUT_S)
        done = await proc.run_async(
            [self.runc, "delete", cid], timeout_s=RUNC_TIMEOUT_S, check=False
        )
        if done.returncode != 0:
            await proc.run_async(
                [self.runc, "delete", "--force", cid], timeout_s=RUNC_TIMEOUT_S, check=False
            )
        # A `runc run` interrupted half way leaves a cgroup runc has no record of.
        await asyncio.to_thread(cgroups.remove, self.cgroups_path(session_id))
        if self.network is not None:
            await asyncio.to_thread(self.network.detach, session_id)
        await asyncio.to_thread(mounts.unmount_below, str(sdir))

    async def stop(self, session_id: str) -> None:
        await asyncio.shield(self._stop(session_id))

    async def _stop(self, session_id: str) -> None:
        async with self._lock(session_id):
            sdir = self._dir(session_id)
            if not sdir.exists():
                raise SessionNotFoundError(f"no session {session_id}")
            await self._teardown(session_id)
            (sdir / "stopped").touch()

    async def freeze(self, session_id: str, layer_id: str) -> FrozenLayer:
        async with self._lock(session_id):
            sdir = self._dir(session_id)
            info = self._read_info(session_id)
            if await self._is_running(session_id):
                raise SessionStartError(f"session {session_id} is running; stop it before freezing")
            await asyncio.to_thread(mounts.unmount_below, str(sdir))
            parent = info.spec.top_layer
            depth = 1 + (self.layers.get(parent).depth if parent else 0)
            if depth > self.layers.max_depth and parent:
                layer = await asyncio.to_thread(self._flatten_into, sdir, info.spec, layer_id)
            else:
                layer = await asyncio.to_thread(
                    self.layers.publish,
                    str(sdir / "disk.img"),
                    layer_id=layer_id,
                    parent=parent,
                    image_id=info.spec.image_id,
                )
            await asyncio.to_thread(mounts.remove_tree, str(sdir))
            self._locks.pop(session_id, None)
            return FrozenLayer(layer.layer_id, layer.parent, layer.size_bytes)

    def _flatten_into(self, sdir: Path, spec: SessionSpec, layer_id: str) -> Any:
        """Publish the session's layer stacked on its chain as one parentless layer."""
        assert spec.top_layer
        temp_id = f"{layer_id}-unflat"
        self.layers.publish(
            str(sdir / "disk.img"), layer_id=temp_id, parent=spec.top_layer, image_id=spec.image_id
        )
        try:
            return self.layers.flatten(
                temp_id,
                new_layer_id=layer_id,
                size_mib=spec.resources.disk_mib,
                root_id=self.id_shift,
            )
        finally:
            self.layers.delete(temp_id)

    async def discard(self, session_id: str) -> None:
        await asyncio.shield(self._discard(session_id))

    async def _discard(self, session_id: str) -> None:
        async with self._lock(session_id):
            sdir = self._dir(session_id)
            await self._teardown(session_id)
            await asyncio.to_thread(mounts.remove_tree, str(sdir))
            self._locks.pop(session_id, None)

    # -- inspection ---------------------------------------------------------

    def _read_info(self, session_id: str) -> SessionInfo:
        try:
            data = json.loads((self._dir(session_id) / "session.json").read_text())
        except FileNotFoundError:
            raise SessionNotFoundError(f"no session {session_id}") from None
        return info_from_json(data)

    async def _is_running(self, session_id: str) -> bool:
        done = await proc.run_async(
            [self.runc, "state", self.container_id(session_id)],
            check=False,
            timeout_s=RUNC_TIMEOUT_S,
        )
        if done.returncode != 0:
            return False
        return json.loads(done.stdout).get("status") in ("running", "created", "paused")

    async def alive(self, session_id: str) -> bool:
        """The container's init still runs: runc's own record of it, read without
        starting `runc state` (a process per session per poll)."""
        state = Path(RUNC_STATE_DIR) / self.container_id(session_id) / "state.json"
        try:
            record = json.loads(state.read_text())
            pid, started = int(record["init_process_pid"]), int(record["init_process_start"])
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, ValueError, KeyError, IndexError):
            return False
        return fields[0] != "Z" and int(fields[19]) == started  # not a reused pid

    async def info(self, session_id: str) -> SessionInfo:
        info = self._read_info(session_id)
        running = await self._is_running(session_id)
        status = SessionStatus.RUNNING if running else SessionStatus.STOPPED
        return SessionInfo(
            info.session_id,
            info.runtime,
            status,
            info.started_at_ms,
            info.user,
            info.cwd,
            info.spec,
        )

    async def usage(self, session_id: str) -> ResourceUsage:
        sdir = self._dir(session_id)
        if not sdir.exists():
            raise SessionNotFoundError(f"no session {session_id}")
        cg = cgroups.read_usage(self.cgroups_path(session_id))
        upper = sdir / "upper"
        disk_used = disk.used_bytes(str(upper)) if mounts.is_mountpoint(str(upper)) else 0
        ingress, egress = 0, 0
        if self.network is not None:
            ingress, egress = await asyncio.to_thread(self.network.transfer, session_id)
        return ResourceUsage(
            cg.cpu_ms, cg.memory_bytes, cg.memory_peak_bytes, cg.pids, disk_used, ingress, egress
        )

    def address(self, session_id: str) -> str | None:
        return self.network.address(session_id) if self.network is not None else None

    async def set_network_policy(self, session_id: str, policy: Mapping[str, Any]) -> None:
        if self.network is None:
            raise EmberRuntimeError("this runtime has no networking; sessions have loopback only")
        if not await self._is_running(session_id):
            raise SessionNotFoundError(f"session {session_id} is not running")
        await asyncio.to_thread(self.network.apply, session_id, policy)

    async def restore_networks(self, policies: Mapping[str, Mapping[str, Any]]) -> None:
        if self.network is not None:
            await asyncio.to_thread(self.network.restore, policies)

    # A container's memory cannot be saved without CRIU, which fails on this
    # class of host (docs/microvm.md): pausing is the microVM runtime's.
    async def pause(self, session_id: str) -> None:
        raise UnsupportedError("pausing a session needs the microvm runtime")

    async def resume(
        self, session_id: str, network_policy: Mapping[str, Any] | None = None
    ) -> SessionInfo:
        raise UnsupportedError("resuming a paused session needs the microvm runtime")

    async def fork(self, session_id: str, spec: SessionSpec) -> SessionInfo:
        raise UnsupportedError("forking a session with its memory needs the microvm runtime")

    def close(self) -> None:
        """Release what the runtime holds for future sessions (its disk pool, the
        network's DNS server and proxy).

        Running sessions are not touched: they outlive emberd and are adopted
        by the next one.
        """
        self.pool.close()
        if self.network is not None:
            self.network.close()

    async def sessions(self) -> list[str]:
        return sorted(
            p.name for p in self.sessions_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
        )


async def _wait_for_exit(pid_file: Path, *, timeout_s: float) -> None:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        exited = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_reader(pidfd, exited.set)
        try:
            await asyncio.wait_for(exited.wait(), timeout_s)
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)


def _tail(path: Path, size: int = 2048) -> bytes:
    try:
        return path.read_bytes()[-size:]
    except OSError:
        return b""
