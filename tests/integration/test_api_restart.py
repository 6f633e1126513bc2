"""kill -9 of emberd at awkward moments loses no sandbox, snapshot or metadata."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from ..conftest import Emberd
from .test_api_lifecycle import create, run, write_file

pytestmark = pytest.mark.integration


@pytest.fixture
def api(emberd: Emberd) -> Iterator[httpx.Client]:
    with emberd.client() as client:
        yield client


def restart(emberd: Emberd) -> httpx.Client:
    emberd.kill()
    emberd.start()
    return emberd.client()


def test_a_running_command_survives_a_crash_of_emberd(emberd: Emberd, api: httpx.Client) -> None:
    created = create(api)
    name, sid = created["sandbox"]["name"], created["session"]["id"]
    write_file(api, sid, "vercel/sandbox/before.txt", b"written before the crash")
    started = api.post(
        f"/v2/sandboxes/sessions/{sid}/cmd",
        json={"command": "sh", "args": ["-c", "echo begin; sleep 2; echo end; exit 5"]},
    ).json()["command"]
    time.sleep(0.3)
    with restart(emberd) as after:
        sandbox = after.get(f"/v2/sandboxes/{name}").json()["sandbox"]
        assert sandbox["status"] == "running" and sandbox["currentSessionId"] == sid
        waited = after.get(
            f"/v2/sandboxes/sessions/{sid}/cmd/{started['id']}", params={"wait": "true"}
        ).json()["command"]
        assert waited["exitCode"] == 5
        logs = after.get(f"/v2/sandboxes/sessions/{sid}/cmd/{started['id']}/logs").text
        assert "".join(json.loads(line)["data"] for line in logs.splitlines()) == "begin\nend\n"
        read = after.post(f"/v2/sandboxes/sessions/{sid}/fs/read", json={"path": "before.txt"})
        assert read.content == b"written before the crash"


def test_a_crash_in_the_middle_of_a_write_changes_nothing(
    emberd: Emberd, api: httpx.Client
) -> None:
    sid = create(api)["session"]["id"]

    def slow_body() -> Iterator[bytes]:
        yield b"\x1f\x8b"  # the start of a gzip stream, then silence
        time.sleep(5)
        yield b"never sent"

    def upload() -> None:
        try:
            with emberd.client() as client:
                client.post(
                    f"/v2/sandboxes/sessions/{sid}/fs/write",
                    content=slow_body(),
                    headers={"x-cwd": "/vercel/sandbox"},
                )
        except httpx.HTTPError:
            pass  # the server died under it, as intended

    uploader = threading.Thread(target=upload)
    uploader.start()
    time.sleep(0.5)
    with restart(emberd) as after:
        code, out, _ = run(after, sid, "ls", "-A", "/vercel/sandbox")
        assert (code, out) == (0, "")
    uploader.join(10)


@pytest.mark.parametrize("delay_s", [0.0, 0.02, 0.05, 0.1])
def test_a_crash_during_stop_keeps_the_filesystem(
    emberd: Emberd, api: httpx.Client, delay_s: float
) -> None:
    created = create(api)
    name, sid = created["sandbox"]["name"], created["session"]["id"]
    write_file(api, sid, "vercel/sandbox/state.txt", b"precious")

    def stop() -> None:
        try:
            with emberd.client() as client:
                client.post(f"/v2/sandboxes/sessions/{sid}/stop")
        except httpx.HTTPError:
            pass

    stopper = threading.Thread(target=stop)
    stopper.start()
    time.sleep(delay_s)
    with restart(emberd) as after:
        stopper.join(10)
        session = after.get(f"/v2/sandboxes/sessions/{sid}").json()["session"]
        # Either the stop finished before the crash, recovery finished it, or
        # it never began and the session was adopted.
        assert session["status"] in ("stopped", "running")
        snapshots = after.get("/v2/sandboxes/snapshots", params={"name": name}).json()["snapshots"]
        assert all(s["status"] == "created" for s in snapshots)
        resumed = after.get(f"/v2/sandboxes/{name}", params={"resume": "true"}).json()
        new_sid = resumed["session"]["id"]
        read = after.post(f"/v2/sandboxes/sessions/{new_sid}/fs/read", json={"path": "state.txt"})
        assert read.status_code == 200 and read.content == b"precious"


def test_the_reaper_catches_up_after_a_restart(emberd: Emberd, api: httpx.Client) -> None:
    created = create(api, timeout=2000)
    sid = created["session"]["id"]
    write_file(api, sid, "vercel/sandbox/kept.txt", b"kept")
    emberd.kill()
    time.sleep(3)  # the timeout passes while no emberd runs
    emberd.start()
    with emberd.client() as after:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            session = after.get(f"/v2/sandboxes/sessions/{sid}").json()["session"]
            if session["status"] == "stopped":
                break
            time.sleep(0.1)
        assert session["status"] == "stopped"
        resumed = after.get(
            f"/v2/sandboxes/{created['sandbox']['name']}", params={"resume": "true"}
        )
        new_sid = resumed.json()["session"]["id"]
        read = after.post(f"/v2/sandboxes/sessions/{new_sid}/fs/read", json={"path": "kept.txt"})
        assert read.content == b"kept"
