"""Fixtures shared by the integration and security suites.

Kernel objects a test creates carry the run's random prefix (`RUN_PREFIX`),
so leftovers are found and parallel runs never collide; the session-scoped
`runtime` fixture asserts at the end that nothing with the prefix remains.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from ember.image import ImageInfo, ImageRecipe, ImageStore
from ember.runtime import AgentClient, ExitStatus, OutputChunk, Resources, SessionSpec, mounts
from ember.runtime.container import ContainerRuntime, default_id_shift
from ember.runtime.microvm import MicroVmRuntime
from ember.runtime.mounts import mounts_below
from ember.testing.netlab import UPSTREAM_IP, Upstream, upstream_namespace

RUN_PREFIX = f"t{uuid.uuid4().hex[:6]}"
DATA_DIR = os.environ.get("EMBER_TEST_DATA_DIR", "/var/lib/ember-test")


def require_host() -> None:
    """Skip (locally) or fail (in CI) when the host cannot run sessions."""
    missing = [tool for tool in ("runc", "mmdebstrap", "mkfs.ext4") if shutil.which(tool) is None]
    reason = None
    if os.geteuid() != 0:
        reason = "integration tests need root"
    elif missing:
        reason = f"missing host tools: {', '.join(missing)} (run `make setup`)"
    if reason:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="session")
def image() -> ImageInfo:
    require_host()
    recipe = ImageRecipe().with_id_shift(default_id_shift())
    return ImageStore(DATA_DIR).ensure(recipe)


@pytest.fixture(scope="session")
def runtime(image: ImageInfo) -> Iterator[ContainerRuntime]:
    rt = ContainerRuntime(DATA_DIR, id_shift=default_id_shift())
    yield rt
    rt.close()
    assert not mounts_below(str(rt.pool.dir)), "the disk pool left mounts behind"
    leftovers = [s for s in os.listdir(rt.sessions_dir) if s.startswith(RUN_PREFIX)]
    leftover_mounts = [m for m in mounts_below(str(rt.sessions_dir)) if RUN_PREFIX in m]
    assert not leftovers, f"sessions left behind: {leftovers}"
    assert not leftover_mounts, f"mounts left behind: {leftover_mounts}"


@dataclass
class Result:
    exit_code: int
    stdout: bytes
    stderr: bytes
    chunks: list[OutputChunk]
    duration_ms: int


class TestSession:
    """A started session plus conveniences for tests."""

    __test__ = False  # not a test class

    def __init__(self, runtime: ContainerRuntime | MicroVmRuntime, session_id: str) -> None:
        self.runtime = runtime
        self.session_id = session_id
        self.agent: AgentClient = runtime.agent(session_id)
        self._n = 0

    def new_cmd_id(self) -> str:
        self._n += 1
        return f"c{self._n}"

    async def start(self, argv: Sequence[str], **kwargs: object) -> str:
        cmd_id = self.new_cmd_id()
        await self.agent.exec(cmd_id, argv, **kwargs)  # type: ignore[arg-type]
        return cmd_id

    async def collect(self, cmd_id: str) -> Result:
        chunks: list[OutputChunk] = []
        status: ExitStatus | None = None
        async for item in self.agent.logs(cmd_id):
            if isinstance(item, OutputChunk):
                chunks.append(item)
            else:
                status = item
        assert status is not None
        return Result(
            status.exit_code,
            b"".join(c.data for c in chunks if c.stream == "stdout"),
            b"".join(c.data for c in chunks if c.stream == "stderr"),
            chunks,
            status.duration_ms,
        )

    async def run(self, argv: Sequence[str], **kwargs: object) -> Result:
        return await self.collect(await self.start(argv, **kwargs))

    async def sh(self, script: str, **kwargs: object) -> Result:
        return await self.run(["/bin/sh", "-c", script], **kwargs)


async def session_starter(
    rt: ContainerRuntime | MicroVmRuntime, image: ImageInfo
) -> AsyncIterator[Any]:
    """For fixtures: yields `await start(top_layer=..., resources=..., keep=...)` ->
    TestSession on `rt`; what it started (unless kept) is discarded afterwards."""
    started: list[str] = []

    async def start(
        *, top_layer: str | None = None, resources: Resources | None = None, keep: bool = False
    ) -> TestSession:
        session_id = f"{RUN_PREFIX}-{uuid.uuid4().hex[:8]}"
        if not keep:
            started.append(session_id)
        spec = SessionSpec(
            session_id=session_id,
            image_id=image.image_id,
            top_layer=top_layer,
            resources=resources or Resources(),
            runtime=rt.name,
        )
        await rt.start(spec)
        return TestSession(rt, session_id)

    yield start
    errors = []
    for session_id in started:
        if session_id in await rt.sessions():
            try:
                await rt.discard(session_id)
            except Exception as exc:  # keep cleaning; report all at the end
                errors.append(f"{session_id}: {exc!r}")
    assert not errors, errors


@pytest.fixture
async def start_session(runtime: ContainerRuntime, image: ImageInfo) -> AsyncIterator[Any]:
    """Factory: `await start_session(top_layer=..., resources=...)` -> TestSession."""
    async for start in session_starter(runtime, image):
        yield start


@pytest.fixture(scope="session")
def vm_runtime(image: ImageInfo) -> Iterator[MicroVmRuntime]:
    """The microVM runtime (TCG here), with its guest assets prepared."""
    rt = MicroVmRuntime(DATA_DIR, id_shift=default_id_shift())
    rt.prepare()
    yield rt
    rt.close()
    leftovers = [s for s in os.listdir(rt.vms_dir) if s.startswith(RUN_PREFIX)]
    assert not leftovers, f"microVM sessions left behind: {leftovers}"


@pytest.fixture(params=["container", "microvm"])
def any_runtime(request: pytest.FixtureRequest) -> ContainerRuntime | MicroVmRuntime:
    """Each runtime in turn: the behaviour every runtime shares is tested on both."""
    if request.param == "microvm":
        return request.getfixturevalue("vm_runtime")  # type: ignore[no-any-return]
    return request.getfixturevalue("runtime")  # type: ignore[no-any-return]


@pytest.fixture
async def start_any(
    any_runtime: ContainerRuntime | MicroVmRuntime, image: ImageInfo
) -> AsyncIterator[Any]:
    """`start_session` on each runtime in turn."""
    async for start in session_starter(any_runtime, image):
        yield start


@pytest.fixture
def layer_ids(runtime: ContainerRuntime) -> Iterator[list[str]]:
    """Layer ids a test creates; deleted afterwards."""
    created: list[str] = []
    yield created
    for layer_id in created:
        runtime.layers.delete(layer_id)


def new_layer_id() -> str:
    return f"{RUN_PREFIX}-layer-{uuid.uuid4().hex[:8]}"


# -- a real emberd, as a separate process ---------------------------------------


@dataclass
class Emberd:
    url: str
    token: str
    project_id: str
    team_id: str
    data_dir: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: str
    extra_args: tuple[str, ...] = ()

    def client(self, token: str | None = None) -> httpx.Client:
        return httpx.Client(
            base_url=self.url,
            headers={"authorization": f"Bearer {token or self.token}"},
            timeout=120,
        )

    def kill(self) -> None:
        """SIGKILL, as a crash would."""
        self.process.kill()
        self.process.wait(10)

    def start(self) -> None:
        self.process = _spawn_emberd(self.data_dir, self.port, self.log_path, self.extra_args)
        _wait_healthy(self.url, self.process, self.log_path)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _spawn_emberd(
    data_dir: str, port: int, log_path: str, extra_args: tuple[str, ...] = ()
) -> subprocess.Popen[bytes]:
    with open(log_path, "ab") as log:  # the child keeps its own descriptor
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "ember",
                "serve",
                "--data-dir",
                data_dir,
                "--port",
                str(port),
                "--log-level",
                "info",
                *extra_args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )


def _log_tail(log_path: str) -> str:
    with open(log_path, errors="replace") as f:
        return f.read()[-3000:]


def _wait_healthy(url: str, process: subprocess.Popen[bytes], log_path: str) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"emberd exited: {_log_tail(log_path)}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"emberd did not come up: {_log_tail(log_path)}")


def cleanup_data_dir(data_dir: str) -> None:
    """Stop every session a test server left, with the product's own runtime code."""
    import asyncio
    from pathlib import Path

    from ember.network import NetworkManager
    from ember.network.links import netns_name
    from ember.network.manager import uninstall_if_unclaimed

    networked = os.path.isdir(os.path.join(data_dir, "network"))
    network = NetworkManager(Path(data_dir), manage_host=False) if networked else None

    runtime = ContainerRuntime(data_dir, id_shift=default_id_shift(), pool_size=0, network=network)
    microvm = MicroVmRuntime(data_dir, network=network)
    discarded: list[str] = []

    async def discard_all() -> None:
        for each in (runtime, microvm):
            for session_id in await each.sessions():
                await each.discard(session_id)
                discarded.append(session_id)

    asyncio.run(discard_all())
    runtime.close()
    namespaces = set(os.listdir("/run/netns")) if os.path.isdir("/run/netns") else set()
    leaked = [s for s in discarded if netns_name(s) in namespaces]
    assert not leaked, f"session networks left behind: {leaked}"
    if network is not None:
        uninstall_if_unclaimed()  # the table stays while another emberd runs
    mounts.remove_tree(data_dir)


def _run_emberd(
    request: pytest.FixtureRequest, name: str, extra_args: tuple[str, ...]
) -> Iterator[Emberd]:
    data_dir = os.path.join(DATA_DIR, f"{name}-{RUN_PREFIX}")
    os.makedirs(data_dir)
    os.symlink(os.path.join(DATA_DIR, "images"), os.path.join(data_dir, "images"))
    # The microVM guest's kernel, initramfs and root disks: cached once for all servers.
    os.makedirs(os.path.join(DATA_DIR, "vm"), exist_ok=True)
    os.symlink(os.path.join(DATA_DIR, "vm"), os.path.join(data_dir, "vm"))
    port = _free_port()
    log_path = os.path.join(DATA_DIR, f"{name}-{RUN_PREFIX}.log")
    process = _spawn_emberd(data_dir, port, log_path, extra_args)
    server = None
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_healthy(url, process, log_path)
        with open(os.path.join(data_dir, "client.json")) as f:
            config = json.load(f)
        server = Emberd(
            url,
            config["token"],
            config["projectId"],
            config["teamId"],
            data_dir,
            process,
            port,
            log_path,
            extra_args,
        )
        yield server
    finally:
        proc_ = server.process if server else process
        if proc_.poll() is None:
            proc_.terminate()
            proc_.wait(30)
        os.unlink(os.path.join(data_dir, "images"))
        os.unlink(os.path.join(data_dir, "vm"))
        cleanup_data_dir(data_dir)
        if request.session.testsfailed == 0 and os.path.exists(log_path):
            os.unlink(log_path)  # kept only to debug a failed run


@pytest.fixture(scope="session")
def emberd(image: ImageInfo, request: pytest.FixtureRequest) -> Iterator[Emberd]:
    """The shared emberd; its sessions have loopback only (networking is one
    emberd's per host, and the network tests start and stop their own)."""
    yield from _run_emberd(request, "api", ("--no-network",))


@pytest.fixture(scope="session")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Upstream]:
    """The fake internet (ember.testing.netlab)."""
    require_host()
    with upstream_namespace(RUN_PREFIX, tmp_path_factory.mktemp("upstream")) as lab:
        yield lab


@pytest.fixture(scope="module")
def emberd_net(
    image: ImageInfo, upstream: Upstream, request: pytest.FixtureRequest
) -> Iterator[Emberd]:
    """An emberd whose sessions have networks, resolving names with the
    upstream's DNS server and trusting its HTTPS CA. Per module: only one
    networked emberd may run on a host, and the low-level network tests need
    the host to themselves."""
    args = ("--network", "--dns-server", UPSTREAM_IP, "--upstream-ca", str(upstream.ca_path))
    yield from _run_emberd(request, f"net{uuid.uuid4().hex[:4]}", args)
