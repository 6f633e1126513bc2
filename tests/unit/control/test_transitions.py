"""The reference's 410 and 422 answers during a stop, through the real app and store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from ember.api import create_app
from ember.control import ControlPlane, Settings, create_token
from ember.runtime import Runtime
from ember.snapshots import LayerStore
from ember.store import Database

from .fake_runtime import FakeRuntime


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[tuple[httpx.AsyncClient, FakeRuntime]]:
    database = Database.sqlite(tmp_path / "ember.db")
    database.migrate()
    token, _ = database.run_sync(lambda db: create_token(db, "default"))
    runtime = FakeRuntime()
    checked: Runtime = runtime  # the fake must satisfy the protocol
    plane = ControlPlane(
        Settings(data_dir=tmp_path), database, checked, LayerStore(tmp_path), "img"
    )
    app = create_app(plane)
    await plane.start()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://ember", headers={"authorization": f"Bearer {token}"}
    ) as client:
        yield client, runtime
    await plane.close()
    database.close()


async def test_stopping_then_snapshotting_then_stopped(
    setup: tuple[httpx.AsyncClient, FakeRuntime],
) -> None:
    api, runtime = setup
    created = (await api.post("/v3/sandboxes", json={"name": "box"})).json()
    sid = created["session"]["id"]
    command = {"command": "true"}

    runtime.stop_gate.clear()
    runtime.freeze_gate.clear()
    stop = asyncio.create_task(api.post(f"/v2/sandboxes/sessions/{sid}/stop"))
    await asyncio.sleep(0.05)
    stopping = await api.post(f"/v2/sandboxes/sessions/{sid}/cmd", json=command)
    assert stopping.status_code == 422 and stopping.json()["error"]["code"] == "sandbox_stopping"
    assert (await api.get(f"/v2/sandboxes/sessions/{sid}")).json()["session"][
        "status"
    ] == "stopping"

    runtime.stop_gate.set()
    await asyncio.sleep(0.05)
    snapshotting = await api.post(f"/v2/sandboxes/sessions/{sid}/fs/mkdir", json={"path": "x"})
    assert snapshotting.status_code == 422
    assert snapshotting.json()["error"]["code"] == "sandbox_snapshotting"

    runtime.freeze_gate.set()
    stopped = (await stop).json()
    assert stopped["session"]["status"] == "stopped"
    assert stopped["snapshot"]["id"] in runtime.frozen
    assert stopped["session"]["activeCpuDurationMs"] == 5
    gone = await api.post(f"/v2/sandboxes/sessions/{sid}/cmd", json=command)
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "sandbox_stopped"

    resumed = (await api.get("/v2/sandboxes/box", params={"resume": "true"})).json()
    assert resumed["resumed"] is True
    spec = runtime.running[resumed["session"]["id"]].spec
    assert spec.top_layer == stopped["snapshot"]["id"]


async def test_concurrent_resumes_start_one_session(
    setup: tuple[httpx.AsyncClient, FakeRuntime],
) -> None:
    api, runtime = setup
    sid = (await api.post("/v3/sandboxes", json={"name": "twice"})).json()["session"]["id"]
    await api.post(f"/v2/sandboxes/sessions/{sid}/stop")
    answers = await asyncio.gather(
        *(api.get("/v2/sandboxes/twice", params={"resume": "true"}) for _ in range(5))
    )
    sessions = {a.json()["session"]["id"] for a in answers}
    assert len(sessions) == 1 and len(runtime.running) == 1


async def test_a_second_stop_returns_the_first_ones_result(
    setup: tuple[httpx.AsyncClient, FakeRuntime],
) -> None:
    api, _ = setup
    sid = (await api.post("/v3/sandboxes", json={"name": "again"})).json()["session"]["id"]
    first, second = await asyncio.gather(
        api.post(f"/v2/sandboxes/sessions/{sid}/stop"),
        api.post(f"/v2/sandboxes/sessions/{sid}/stop"),
    )
    assert first.status_code == second.status_code == 200
    assert first.json()["snapshot"]["id"] == second.json()["snapshot"]["id"]
