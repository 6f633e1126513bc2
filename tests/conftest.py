"""Fixtures shared by the integration and security suites.

Kernel objects a test creates carry the run's random prefix (`RUN_PREFIX`),
so leftovers are found and parallel runs never collide; the session-scoped
`runtime` fixture asserts at the end that nothing with the prefix remains.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass

import pytest

from ember.image import ImageInfo, ImageRecipe, ImageStore
from ember.runtime import AgentClient, ExitStatus, OutputChunk, Resources, SessionSpec
from ember.runtime.container import ContainerRuntime, default_id_shift
from ember.runtime.mounts import mounts_below

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

    def __init__(self, runtime: ContainerRuntime, session_id: str) -> None:
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


@pytest.fixture
async def start_session(runtime: ContainerRuntime, image: ImageInfo) -> AsyncIterator[object]:
    """Factory: `await start_session(top_layer=..., resources=...)` -> TestSession."""
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
        )
        await runtime.start(spec)
        return TestSession(runtime, session_id)

    yield start
    errors = []
    for session_id in started:
        if session_id in await runtime.sessions():
            try:
                await runtime.discard(session_id)
            except Exception as exc:  # keep cleaning; report all at the end
                errors.append(f"{session_id}: {exc!r}")
    assert not errors, errors


@pytest.fixture
def layer_ids(runtime: ContainerRuntime) -> Iterator[list[str]]:
    """Layer ids a test creates; deleted afterwards."""
    created: list[str] = []
    yield created
    for layer_id in created:
        runtime.layers.delete(layer_id)


def new_layer_id() -> str:
    return f"{RUN_PREFIX}-layer-{uuid.uuid4().hex[:8]}"
