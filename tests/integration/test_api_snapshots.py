"""Snapshots over HTTP: retention, rollback, expiry (caught up after a restart), deletion."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..conftest import Emberd
from .test_api_lifecycle import create, run, stop, write_file

pytestmark = pytest.mark.integration


@pytest.fixture
def api(emberd: Emberd) -> Iterator[httpx.Client]:
    with emberd.client() as client:
        yield client


def resume(api: httpx.Client, name: str) -> str:
    response = api.get(f"/v2/sandboxes/{name}", params={"resume": "true"})
    assert response.status_code == 200, response.text
    return str(response.json()["session"]["id"])


def generations(
    api: httpx.Client, name: str, sid: str, count: int
) -> tuple[str, list[dict[str, Any]]]:
    """Write `gen=N` then stop, `count` times; returns the live session and the snapshots."""
    snapshots = []
    for n in range(count):
        write_file(api, sid, "vercel/sandbox/gen.txt", f"gen={n}".encode())
        snapshots.append(stop(api, sid)["snapshot"])
        sid = resume(api, name)
    return sid, snapshots


def read(api: httpx.Client, sid: str, path: str) -> httpx.Response:
    return api.post(f"/v2/sandboxes/sessions/{sid}/fs/read", json={"path": path})


def test_parent_links_retention_and_rollback(api: httpx.Client) -> None:
    created = create(api, keepLastSnapshots={"count": 2})
    name = created["sandbox"]["name"]
    sid, snaps = generations(api, name, created["session"]["id"], 3)
    assert snaps[0].get("parentId") is None
    assert snaps[1]["parentId"] == snaps[0]["id"] and snaps[2]["parentId"] == snaps[1]["id"]

    statuses = {
        s["id"]: api.get(f"/v2/sandboxes/snapshots/{s['id']}").json()["snapshot"]["status"]
        for s in snaps
    }
    assert statuses == {
        snaps[0]["id"]: "deleted",
        snaps[1]["id"]: "created",
        snaps[2]["id"]: "created",
    }
    assert read(api, sid, "gen.txt").content == b"gen=2"

    # A fourth snapshot evicts the second; roll back to the third, whose
    # ancestors are partly deleted: its data must still be whole.
    write_file(api, sid, "vercel/sandbox/gen.txt", b"gen=3")
    latest = stop(api, sid)["snapshot"]
    assert (
        api.get(f"/v2/sandboxes/snapshots/{snaps[1]['id']}").json()["snapshot"]["status"]
        == "deleted"
    )
    patched = api.patch(f"/v2/sandboxes/{name}", json={"currentSnapshotId": snaps[2]["id"]})
    assert (
        patched.status_code == 200
        and patched.json()["sandbox"]["currentSnapshotId"] == snaps[2]["id"]
    )
    rolled = resume(api, name)
    assert read(api, rolled, "gen.txt").content == b"gen=2"
    assert latest["id"] != snaps[2]["id"]
    gone = api.patch(f"/v2/sandboxes/{name}", json={"currentSnapshotId": snaps[0]["id"]})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "snapshot_not_found"


def test_deleting_a_snapshot_keeps_what_depends_on_it(api: httpx.Client) -> None:
    created = create(api)
    name = created["sandbox"]["name"]
    sid, snaps = generations(api, name, created["session"]["id"], 2)
    deleted = api.delete(f"/v2/sandboxes/snapshots/{snaps[0]['id']}")
    assert deleted.status_code == 200 and deleted.json()["snapshot"]["status"] == "deleted"
    # Its child stacks on its layer, so the data must survive.
    stop(api, sid)
    assert read(api, resume(api, name), "gen.txt").content == b"gen=1"
    assert api.get("/v2/sandboxes/snapshots/snap_missing").status_code == 404


def test_update_changes_the_next_session(api: httpx.Client) -> None:
    created = create(api)
    name, sid = created["sandbox"]["name"], created["session"]["id"]
    patched = api.patch(
        f"/v2/sandboxes/{name}",
        json={
            "env": {"NEW": "1"},
            "tags": {"t": "x"},
            "resources": {"vcpus": 1},
            "persistent": False,
        },
    )
    assert patched.status_code == 200
    sandbox = patched.json()["sandbox"]
    assert sandbox["tags"] == {"t": "x"} and sandbox["vcpus"] == 1 and sandbox["memory"] == 2048
    assert (
        run(api, sid, "sh", "-c", "echo ${NEW:-unset}")[1] == "1\n"
    )  # env applies to new commands
    stop(api, sid)
    session = api.get(f"/v2/sandboxes/{name}", params={"resume": "true"}).json()["session"]
    assert session["vcpus"] == 1 and session["memory"] == 2048


def test_delete_sandbox(api: httpx.Client) -> None:
    created = create(api)
    name = created["sandbox"]["name"]
    write_file(api, created["session"]["id"], "vercel/sandbox/x", b"x")
    deleted = api.delete(f"/v2/sandboxes/{name}")
    assert deleted.status_code == 200
    assert api.get(f"/v2/sandboxes/{name}").status_code == 404
    assert api.get(f"/v2/sandboxes/sessions/{created['session']['id']}").status_code == 404
    again = api.post("/v3/sandboxes", json={"name": name})
    assert again.status_code == 200  # the name is free again


def test_expired_snapshots_are_caught_up_after_a_restart(emberd: Emberd, api: httpx.Client) -> None:
    created = create(api)
    name = created["sandbox"]["name"]
    snapshot = stop(api, created["session"]["id"])["snapshot"]
    assert snapshot["expiresAt"] > time.time() * 1000
    emberd.kill()
    with sqlite3.connect(f"{emberd.data_dir}/ember.db") as db:
        db.execute("UPDATE snapshots SET expires_at = 1 WHERE id = ?", (snapshot["id"],))
    emberd.start()
    with emberd.client() as fresh:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = fresh.get(f"/v2/sandboxes/snapshots/{snapshot['id']}").json()["snapshot"][
                "status"
            ]
            if status == "deleted":
                break
            time.sleep(0.2)
        assert status == "deleted"
        gone = fresh.get(f"/v2/sandboxes/{name}", params={"resume": "true"})
        assert gone.status_code == 410 and gone.json()["error"]["code"] == "snapshot_not_found"
