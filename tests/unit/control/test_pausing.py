"""Pause, resume and fork with memory: the control plane's states and answers,
through the real app and store (the runtime seam is the fake; the real
microVM runs them in tests/integration/test_pause_api.py)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from ember.api import create_app
from ember.control import ControlPlane, Settings, create_token
from ember.snapshots import LayerStore
from ember.store import Database, models

from .fake_runtime import FakeRuntime


@dataclass
class Clock:
    now: int = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now


@dataclass
class Setup:
    api: httpx.AsyncClient
    runtime: FakeRuntime
    clock: Clock
    plane: ControlPlane
    database: Database


def _plane(tmp_path: Path, database: Database, runtime: FakeRuntime, clock: Clock) -> ControlPlane:
    settings = Settings(data_dir=tmp_path, runtimes=("container", "microvm"))
    return ControlPlane(settings, database, runtime, LayerStore(tmp_path), "img", clock=clock)


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    database = Database.sqlite(tmp_path / "ember.db")
    database.migrate()
    token, _ = database.run_sync(lambda db: create_token(db, "default"))
    runtime, clock = FakeRuntime(), Clock()
    plane = _plane(tmp_path, database, runtime, clock)
    await plane.start()
    transport = httpx.ASGITransport(app=create_app(plane))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://ember", headers={"authorization": f"Bearer {token}"}
    ) as client:
        yield Setup(client, runtime, clock, plane, database)
    await plane.close()
    database.close()


async def _create(api: httpx.AsyncClient, name: str, runtime: str = "microvm") -> dict:
    answer = await api.post("/v3/sandboxes", json={"name": name, "runtime": runtime})
    assert answer.status_code == 200, answer.text
    return answer.json()


async def test_a_paused_session_reads_stopped_and_resumes_as_the_same_session(
    setup: Setup,
) -> None:
    api, runtime, clock = setup.api, setup.runtime, setup.clock
    created = await _create(api, "vm")
    sid = created["session"]["id"]
    expires = created["session"]["expiresAt"]

    clock.now += 10_000
    paused = await api.post(f"/v2/sandboxes/sessions/{sid}/pause")
    assert paused.status_code == 200, paused.text
    body = paused.json()
    # The official clients accept only the reference's states: paused reads as stopped.
    assert body["session"]["status"] == "stopped" and body["session"]["paused"] is True
    assert body["sandbox"]["status"] == "stopped" and body["sandbox"]["paused"] is True
    assert "expiresAt" not in body["session"]
    assert sid in runtime.paused

    again = await api.post(f"/v2/sandboxes/sessions/{sid}/pause")
    assert again.status_code == 200 and again.json()["session"]["paused"] is True

    command = await api.post(f"/v2/sandboxes/sessions/{sid}/cmd", json={"command": "true"})
    assert command.status_code == 410 and command.json()["error"]["code"] == "sandbox_stopped"

    clock.now += 3_600_000  # an hour paused does not count against the timeout
    resumed = await api.get("/v2/sandboxes/vm", params={"resume": "true"})
    assert resumed.status_code == 200
    session = resumed.json()["session"]
    assert resumed.json()["resumed"] is True
    assert session["id"] == sid and session["status"] == "running"
    assert "paused" not in session
    assert session["expiresAt"] == expires + 3_600_000
    assert sid in runtime.running and sid not in runtime.paused


async def test_explicit_resume_and_its_idempotence(setup: Setup) -> None:
    api = setup.api
    sid = (await _create(api, "vm2"))["session"]["id"]
    assert (await api.post(f"/v2/sandboxes/sessions/{sid}/pause")).status_code == 200
    resumed = await api.post(f"/v2/sandboxes/sessions/{sid}/resume")
    assert resumed.status_code == 200
    assert resumed.json()["session"]["status"] == "running"
    assert resumed.json()["sandbox"]["status"] == "running"
    twice = await api.post(f"/v2/sandboxes/sessions/{sid}/resume")
    assert twice.status_code == 200 and twice.json()["session"]["status"] == "running"
    await api.post(f"/v2/sandboxes/sessions/{sid}/stop")
    ended = await api.post(f"/v2/sandboxes/sessions/{sid}/resume")
    assert ended.status_code == 410 and ended.json()["error"]["code"] == "sandbox_stopped"


async def test_containers_cannot_pause_and_nothing_changes(setup: Setup) -> None:
    api, runtime = setup.api, setup.runtime
    sid = (await _create(api, "box", runtime="container"))["session"]["id"]
    answer = await api.post(f"/v2/sandboxes/sessions/{sid}/pause")
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == "unsupported_by_runtime"
    session = (await api.get(f"/v2/sandboxes/sessions/{sid}")).json()["session"]
    assert session["status"] == "running" and sid in runtime.running
    fork = await api.post("/v2/sandboxes/box/fork", json={"withMemory": True})
    assert fork.status_code == 400
    assert fork.json()["error"]["code"] == "unsupported_by_runtime"
    names = [s["name"] for s in (await api.get("/v2/sandboxes")).json()["sandboxes"]]
    assert names == ["box"]  # the refused fork left no sandbox behind


async def test_stopping_or_snapshotting_a_paused_session_keeps_its_disk(setup: Setup) -> None:
    api, runtime = setup.api, setup.runtime
    sid = (await _create(api, "vm3"))["session"]["id"]
    await api.post(f"/v2/sandboxes/sessions/{sid}/pause")
    snap = await api.post(f"/v2/sandboxes/sessions/{sid}/snapshot")
    assert snap.status_code == 200, snap.text
    assert snap.json()["session"]["status"] == "stopped"
    assert "paused" not in snap.json()["session"]
    assert runtime.frozen[snap.json()["snapshot"]["id"]] == sid
    assert sid not in runtime.paused


async def test_deleting_a_paused_sandbox_ends_its_session(setup: Setup) -> None:
    api, runtime = setup.api, setup.runtime
    sid = (await _create(api, "vm4"))["session"]["id"]
    await api.post(f"/v2/sandboxes/sessions/{sid}/pause")
    assert (await api.delete("/v2/sandboxes/vm4")).status_code == 200
    assert sid not in runtime.paused and sid not in runtime.running


async def test_a_fork_with_memory_pauses_a_running_source_and_resumes_it(setup: Setup) -> None:
    api, runtime = setup.api, setup.runtime
    sid = (await _create(api, "src"))["session"]["id"]
    forked = await api.post("/v2/sandboxes/src/fork", json={"name": "copy", "withMemory": True})
    assert forked.status_code == 200, forked.text
    new_sid = forked.json()["session"]["id"]
    assert forked.json()["session"]["status"] == "running"
    assert runtime.forked[new_sid] == sid
    assert runtime.running[new_sid].spec.hostname == "copy"
    source = (await api.get(f"/v2/sandboxes/sessions/{sid}")).json()["session"]
    assert source["status"] == "running"  # the same session, running on

    resized = await api.post(
        "/v2/sandboxes/src/fork", json={"withMemory": True, "resources": {"vcpus": 2}}
    )
    assert resized.status_code == 400 and resized.json()["error"]["code"] == "bad_request"

    await api.post(f"/v2/sandboxes/sessions/{sid}/stop")
    stopped = await api.post("/v2/sandboxes/src/fork", json={"withMemory": True})
    assert stopped.status_code == 410


async def test_a_fork_of_a_paused_source_leaves_it_paused(setup: Setup) -> None:
    api, runtime = setup.api, setup.runtime
    sid = (await _create(api, "psrc"))["session"]["id"]
    await api.post(f"/v2/sandboxes/sessions/{sid}/pause")
    forked = await api.post("/v2/sandboxes/psrc/fork", json={"withMemory": True})
    assert forked.status_code == 200, forked.text
    assert sid in runtime.paused


async def test_runtime_on_update_and_fork(setup: Setup) -> None:
    api = setup.api
    await _create(api, "switch", runtime="container")
    updated = await api.patch("/v2/sandboxes/switch", json={"runtime": "microvm"})
    assert updated.status_code == 200 and updated.json()["sandbox"]["runtime"] == "microvm"
    session_id = updated.json()["sandbox"]["currentSessionId"]
    current = (await api.get(f"/v2/sandboxes/sessions/{session_id}")).json()["session"]
    assert current["runtime"] == "container"  # the running session stays as it started
    language = await api.patch("/v2/sandboxes/switch", json={"runtime": "node22"})
    assert language.status_code == 400
    fork = await api.post("/v2/sandboxes/switch/fork", json={"runtime": "container"})
    assert fork.status_code == 200 and fork.json()["session"]["runtime"] == "container"


async def test_recovery_settles_a_session_left_pausing(setup: Setup, tmp_path: Path) -> None:
    api, runtime = setup.api, setup.runtime
    sid = (await _create(api, "crash"))["session"]["id"]
    await runtime.pause(sid)  # the runtime paused it, then emberd "crashed"

    def pausing(db: object) -> None:
        row = db.get(models.Session, sid)  # type: ignore[attr-defined]
        row.status = "pausing"

    await setup.database.run(pausing)  # type: ignore[arg-type]
    plane = _plane(tmp_path, setup.database, runtime, setup.clock)
    await plane.recover()
    row = await setup.database.run(lambda db: db.get(models.Session, sid))
    assert row is not None and row.status == "paused"


async def test_a_session_that_ends_by_itself_is_stopped_and_snapshotted(
    tmp_path: Path,
) -> None:
    """The liveness watch: a guest's poweroff reads as a stop (with its snapshot)."""
    database = Database.sqlite(tmp_path / "ember.db")
    database.migrate()
    token, _ = database.run_sync(lambda db: create_token(db, "default"))
    runtime = FakeRuntime()
    settings = Settings(data_dir=tmp_path, liveness_interval_s=0.05)
    plane = ControlPlane(settings, database, runtime, LayerStore(tmp_path), "img")
    await plane.start()
    transport = httpx.ASGITransport(app=create_app(plane))
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(transport=transport, base_url="http://e", headers=headers) as api:
        sid = (await _create(api, "ends", runtime="container"))["session"]["id"]
        runtime.stopped[sid] = runtime.running.pop(sid)  # it ended, nobody asked
        for _ in range(100):
            session = (await api.get(f"/v2/sandboxes/sessions/{sid}")).json()["session"]
            if session["status"] == "stopped":
                break
            await asyncio.sleep(0.05)
        assert session["status"] == "stopped"
        box = (await api.get("/v2/sandboxes/ends")).json()["sandbox"]
        assert box["currentSnapshotId"] in runtime.frozen  # persistent: its files kept
    await plane.close()
    database.close()
