"""emberd over HTTP with the real container runtime: the sandbox lifecycle."""

from __future__ import annotations

import io
import json
import tarfile
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..conftest import Emberd

pytestmark = pytest.mark.integration


def unique(prefix: str = "sb") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def api(emberd: Emberd) -> Iterator[httpx.Client]:
    with emberd.client() as client:
        yield client


def create(api: httpx.Client, **body: Any) -> dict[str, Any]:
    body.setdefault("name", unique())
    response = api.post("/v3/sandboxes", json=body)
    assert response.status_code == 200, response.text
    return response.json()


def session_id(api: httpx.Client, name: str) -> str:
    return api.get(f"/v2/sandboxes/{name}").json()["sandbox"]["currentSessionId"]


def run(
    api: httpx.Client, sid: str, command: str, *args: str, **extra: Any
) -> tuple[int, str, str]:
    response = api.post(
        f"/v2/sandboxes/sessions/{sid}/cmd",
        json={"command": command, "args": list(args), "wait": True, "logs": True, **extra},
    )
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/x-ndjson"
    lines = [json.loads(line) for line in response.text.splitlines()]
    assert lines[0]["command"]["exitCode"] is None
    final = lines[-1]["command"]
    out = "".join(line["data"] for line in lines[1:-1] if line.get("stream") == "stdout")
    err = "".join(line["data"] for line in lines[1:-1] if line.get("stream") == "stderr")
    return final["exitCode"], out, err


def write_file(api: httpx.Client, sid: str, path: str, content: bytes, cwd: str = "/") -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        info = tarfile.TarInfo(path)
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    response = api.post(
        f"/v2/sandboxes/sessions/{sid}/fs/write",
        content=buffer.getvalue(),
        headers={"x-cwd": cwd, "content-type": "application/gzip"},
    )
    assert response.status_code == 200, response.text


def stop(api: httpx.Client, sid: str) -> dict[str, Any]:
    response = api.post(f"/v2/sandboxes/sessions/{sid}/stop")
    assert response.status_code == 200, response.text
    return response.json()


def test_create_run_stop_resume_keeps_files(api: httpx.Client) -> None:
    created = create(api, ports=[3000], env={"GREETING": "hi"}, tags={"team": "a"})
    sandbox, session = created["sandbox"], created["session"]
    assert sandbox["status"] == "running" and sandbox["persistent"] is True
    assert session["status"] == "running" and session["cwd"] == "/vercel/sandbox"
    assert sandbox["memory"] == 2048 * sandbox["vcpus"]
    assert created["routes"][0]["port"] == 3000
    sid = session["id"]
    write_file(api, sid, "vercel/sandbox/notes.txt", b"persisted")
    assert run(api, sid, "sh", "-c", "echo $GREETING; echo oops >&2; exit 4") == (
        4,
        "hi\n",
        "oops\n",
    )

    stopped = stop(api, sid)
    assert stopped["session"]["status"] == "stopped"
    snapshot = stopped["snapshot"]
    assert snapshot["status"] == "created" and snapshot["sourceSessionId"] == sid
    assert stopped["sandbox"]["currentSnapshotId"] == snapshot["id"]

    gone = api.post(f"/v2/sandboxes/sessions/{sid}/cmd", json={"command": "true"})
    assert gone.status_code == 410 and gone.json()["error"]["code"] == "sandbox_stopped"

    resumed = api.get(f"/v2/sandboxes/{sandbox['name']}", params={"resume": "true"}).json()
    assert resumed["resumed"] is True
    new_sid = resumed["session"]["id"]
    assert new_sid != sid and resumed["session"]["sourceSnapshotId"] == snapshot["id"]
    read = api.post(f"/v2/sandboxes/sessions/{new_sid}/fs/read", json={"path": "notes.txt"})
    assert read.status_code == 200 and read.content == b"persisted"
    assert read.headers["content-type"].startswith("application/octet-stream")
    # A plain GET does not resume and reports the running session.
    again = api.get(f"/v2/sandboxes/{sandbox['name']}").json()
    assert "resumed" not in again and again["sandbox"]["currentSessionId"] == new_sid


def test_non_persistent_sandboxes_start_clean(api: httpx.Client) -> None:
    created = create(api, persistent=False)
    name, sid = created["sandbox"]["name"], created["session"]["id"]
    write_file(api, sid, "vercel/sandbox/scratch.txt", b"temporary")
    stopped = stop(api, sid)
    assert "snapshot" not in stopped and stopped["sandbox"].get("currentSnapshotId") is None
    resumed = api.get(f"/v2/sandboxes/{name}", params={"resume": "true"}).json()
    missing = api.post(
        f"/v2/sandboxes/sessions/{resumed['session']['id']}/fs/read", json={"path": "scratch.txt"}
    )
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "file_not_found"


def test_detached_commands_wait_kill_logs_and_list(api: httpx.Client) -> None:
    sid = create(api)["session"]["id"]
    started = api.post(
        f"/v2/sandboxes/sessions/{sid}/cmd",
        json={"command": "sh", "args": ["-c", "for i in 1 2 3; do echo $i; sleep 0.1; done"]},
    )
    assert started.status_code == 200 and started.headers["content-type"] == "application/json"
    cmd = started.json()["command"]
    assert cmd["exitCode"] is None and cmd["sessionId"] == sid
    waited = api.get(
        f"/v2/sandboxes/sessions/{sid}/cmd/{cmd['id']}", params={"wait": "true"}
    ).json()
    assert waited["command"]["exitCode"] == 0 and waited["command"]["durationMs"] >= 200
    # Logs replay from the start, every time.
    for _ in range(2):
        logs = api.get(f"/v2/sandboxes/sessions/{sid}/cmd/{cmd['id']}/logs")
        assert logs.headers["content-type"] == "application/x-ndjson"
        data = "".join(json.loads(line)["data"] for line in logs.text.splitlines())
        assert data == "1\n2\n3\n"

    sleeper = api.post(
        f"/v2/sandboxes/sessions/{sid}/cmd", json={"command": "sleep", "args": ["100"]}
    )
    sleeper_id = sleeper.json()["command"]["id"]
    killed = api.post(f"/v2/sandboxes/sessions/{sid}/cmd/{sleeper_id}/kill", json={"signal": 9})
    assert killed.status_code == 200
    final = api.get(
        f"/v2/sandboxes/sessions/{sid}/cmd/{sleeper_id}", params={"wait": "true"}
    ).json()
    assert final["command"]["exitCode"] == 137

    listed = api.get(f"/v2/sandboxes/sessions/{sid}/cmd").json()["commands"]
    assert [c["id"] for c in listed] == [cmd["id"], sleeper_id]

    timed = run(api, sid, "sleep", "100", timeout=300)
    assert timed[0] == 137
    missing = api.get(f"/v2/sandboxes/sessions/{sid}/cmd/cmd_nope")
    assert missing.status_code == 404


def test_sudo_and_env_merging(api: httpx.Client) -> None:
    sid = create(api, env={"A": "sandbox", "B": "sandbox"})["session"]["id"]
    code, out, _ = run(api, sid, "sh", "-c", "echo $A $B; id -u", env={"B": "command"})
    assert (code, out) == (0, "sandbox command\n1000\n")
    assert run(api, sid, "id", "-u", sudo=True)[1] == "0\n"


def test_files_mkdir_read_write(api: httpx.Client) -> None:
    sid = create(api)["session"]["id"]
    every_byte = bytes(range(256))
    write_file(api, sid, "data/bytes.bin", every_byte, cwd="/vercel/sandbox")
    read = api.post(
        f"/v2/sandboxes/sessions/{sid}/fs/read", json={"path": "/vercel/sandbox/data/bytes.bin"}
    )
    assert read.content == every_byte
    made = api.post(
        f"/v2/sandboxes/sessions/{sid}/fs/mkdir", json={"path": "a/b", "recursive": True}
    )
    assert made.status_code == 200 and made.json() == {}
    exists = api.post(f"/v2/sandboxes/sessions/{sid}/fs/mkdir", json={"path": "a/b"})
    assert exists.status_code == 409
    relative = api.post(
        f"/v2/sandboxes/sessions/{sid}/fs/read",
        json={"path": "bytes.bin", "cwd": "/vercel/sandbox/data"},
    )
    assert relative.content == every_byte
    # `..` never leaves the sandbox: it stops at its root.
    climbed = api.post(
        f"/v2/sandboxes/sessions/{sid}/fs/read", json={"path": "../../../../etc/hostname"}
    )
    assert climbed.status_code == 200
    bad_tar = api.post(
        f"/v2/sandboxes/sessions/{sid}/fs/write", content=b"not a tar", headers={"x-cwd": "/tmp"}
    )
    assert bad_tar.status_code == 400


def test_explicit_snapshot_stops_the_session_and_seeds_new_sandboxes(api: httpx.Client) -> None:
    created = create(api, persistent=False)
    sid = created["session"]["id"]
    write_file(api, sid, "vercel/sandbox/seed.txt", b"seed")
    response = api.post(f"/v2/sandboxes/sessions/{sid}/snapshot", json={"expiration": 0})
    assert response.status_code == 200, response.text
    snapshot = response.json()["snapshot"]
    assert response.json()["session"]["status"] == "stopped"
    assert snapshot["creationMethod"] == "snapshot" and "expiresAt" not in snapshot

    child = create(api, source={"type": "snapshot", "snapshotId": snapshot["id"]})
    read = api.post(
        f"/v2/sandboxes/sessions/{child['session']['id']}/fs/read", json={"path": "seed.txt"}
    )
    assert read.content == b"seed"
    assert (
        api.get(f"/v2/sandboxes/snapshots/{snapshot['id']}").json()["snapshot"]["id"]
        == snapshot["id"]
    )


def test_fork_copies_configuration_and_filesystem(api: httpx.Client) -> None:
    source = create(api, env={"K": "v"}, tags={"role": "source"}, ports=[8080])
    sid = source["session"]["id"]
    write_file(api, sid, "vercel/sandbox/state.txt", b"one")
    stop(api, sid)
    fork_name = unique("fork")
    forked = api.post(
        f"/v2/sandboxes/{source['sandbox']['name']}/fork",
        json={"name": fork_name, "tags": {"role": "fork"}},
    )
    assert forked.status_code == 200, forked.text
    body = forked.json()
    assert body["sandbox"]["name"] == fork_name
    assert body["sandbox"]["env"] == {"K": "v"} and body["sandbox"]["tags"] == {"role": "fork"}
    assert body["sandbox"]["ports"] == [8080]
    fork_sid = body["session"]["id"]
    assert (
        api.post(f"/v2/sandboxes/sessions/{fork_sid}/fs/read", json={"path": "state.txt"}).content
        == b"one"
    )
    write_file(api, fork_sid, "vercel/sandbox/state.txt", b"two")
    resumed = api.get(
        f"/v2/sandboxes/{source['sandbox']['name']}", params={"resume": "true"}
    ).json()
    original = api.post(
        f"/v2/sandboxes/sessions/{resumed['session']['id']}/fs/read", json={"path": "state.txt"}
    )
    assert original.content == b"one"


def test_timeouts_fire_and_extend(api: httpx.Client) -> None:
    short = create(api, timeout=2000)
    sid = short["session"]["id"]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        status = api.get(f"/v2/sandboxes/sessions/{sid}").json()["session"]["status"]
        if status == "stopped":
            break
        time.sleep(0.2)
    assert status == "stopped"
    session = api.get(f"/v2/sandboxes/sessions/{sid}").json()["session"]
    assert session["stoppedAt"] - session["startedAt"] < 2000 + 1500

    longer = create(api, timeout=60_000)
    extended = api.post(
        f"/v2/sandboxes/sessions/{longer['session']['id']}/extend-timeout",
        json={"duration": 30_000},
    )
    assert extended.status_code == 200
    assert extended.json()["session"]["timeout"] == 90_000
    too_long = api.post(
        f"/v2/sandboxes/sessions/{longer['session']['id']}/extend-timeout",
        json={"duration": 10**10},
    )
    assert too_long.status_code == 400


def test_auth_and_project_scoping(emberd: Emberd, api: httpx.Client) -> None:
    name = create(api)["sandbox"]["name"]
    with httpx.Client(base_url=emberd.url) as anonymous:
        missing = anonymous.get("/v2/sandboxes")
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "unauthorized"
    with emberd.client(token="ember_wrong") as wrong:
        assert wrong.get("/v2/sandboxes").status_code == 401
    other_token = _token_for(emberd, "other-project")
    with emberd.client(token=other_token) as other:
        assert other.get(f"/v2/sandboxes/{name}").status_code == 404
        assert all(s["name"] != name for s in other.get("/v2/sandboxes").json()["sandboxes"])
    assert api.get("/v2/sandboxes", params={"teamId": emberd.team_id}).status_code == 200
    assert api.get("/v2/sandboxes", params={"teamId": "team_other"}).status_code == 403
    assert api.get("/v2/sandboxes", params={"projectId": emberd.project_id}).status_code == 200


def _token_for(emberd: Emberd, project: str) -> str:
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "ember",
            "token",
            "create",
            "--data-dir",
            emberd.data_dir,
            "--project",
            project,
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.strip()


def test_stdin_in_chunks_with_offsets(api: httpx.Client) -> None:
    import base64

    sid = create(api)["session"]["id"]
    cmd = api.post(
        f"/v2/sandboxes/sessions/{sid}/cmd", json={"command": "cat", "attachStdin": True}
    ).json()["command"]
    path = f"/v2/sandboxes/sessions/{sid}/cmd/{cmd['id']}/stdin"

    def chunk(data: bytes, offset: int | None = None, close: bool = False) -> httpx.Response:
        body: dict[str, object] = {"data": base64.b64encode(data).decode(), "close": close}
        if offset is not None:
            body["offset"] = offset
        return api.post(path, json=body)

    assert chunk(b"hello ").json()["bytesWritten"] == 6
    # A retried chunk that overlaps what was written is applied once.
    assert chunk(b"hello world", offset=0).json()["bytesWritten"] == 11
    gap = chunk(b"!", offset=20)
    assert gap.status_code == 409
    assert chunk(b"", close=True).json()["bytesWritten"] == 11
    done = api.get(f"/v2/sandboxes/sessions/{sid}/cmd/{cmd['id']}", params={"wait": "true"})
    assert done.json()["command"]["exitCode"] == 0
    logs = api.get(f"/v2/sandboxes/sessions/{sid}/cmd/{cmd['id']}/logs").text
    assert "".join(json.loads(line)["data"] for line in logs.splitlines()) == "hello world"
    closed = chunk(b"late")
    assert closed.status_code == 400
    assert closed.json()["error"]["code"] == "command_stdin_unavailable"
    no_stdin = api.post(f"/v2/sandboxes/sessions/{sid}/cmd", json={"command": "true"}).json()
    refused = api.post(
        f"/v2/sandboxes/sessions/{sid}/cmd/{no_stdin['command']['id']}/stdin",
        json={"data": "eA=="},
    )
    assert refused.status_code == 400
