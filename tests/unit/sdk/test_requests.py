"""`ember.sdk._requests`: Python-style options to the bodies emberd's models accept."""

from __future__ import annotations

import io
import tarfile
from datetime import timedelta

import pytest

from ember.sdk import _requests
from ember.wire.sandbox import CreateSandboxRequest, ForkSandboxRequest, UpdateSandboxRequest


def test_an_empty_create_body() -> None:
    assert _requests.create_body() == {}


def test_create_body_converts_every_option() -> None:
    body = _requests.create_body(
        name="box",
        image="debian",
        source_snapshot="snap_1",
        ports=(3000, 8080),
        timeout=90,
        vcpus=2,
        memory_mib=4096,
        env={"A": "1"},
        tags={"team": "x"},
        persistent=False,
        network_policy="deny-all",
        snapshot_expiration=timedelta(days=1),
        keep_last_snapshots=3,
    )
    assert body == {
        "name": "box",
        "image": "debian",
        "source": {"type": "snapshot", "snapshotId": "snap_1"},
        "ports": [3000, 8080],
        "timeout": 90_000,
        "resources": {"vcpus": 2, "memory": 4096},
        "env": {"A": "1"},
        "tags": {"team": "x"},
        "persistent": False,
        "networkPolicy": {"mode": "deny-all"},
        "snapshotExpiration": 86_400_000,
        "keepLastSnapshots": {"count": 3},
    }
    # The server's strict request model takes it as it is.
    parsed = CreateSandboxRequest.model_validate(body)
    assert parsed.timeout == 90_000 and parsed.source is not None
    assert parsed.source.snapshot_id == "snap_1"
    assert parsed.network_policy == {"mode": "deny-all"}


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [(1.5, 1500), (timedelta(minutes=5), 300_000), (timedelta(milliseconds=1), 1)],
)
def test_durations_become_milliseconds(timeout: float | timedelta, expected: int) -> None:
    assert _requests.create_body(timeout=timeout)["timeout"] == expected
    assert _requests.update_body(timeout=timeout)["timeout"] == expected
    assert _requests.create_body(snapshot_expiration=timeout)["snapshotExpiration"] == expected


def test_resources_have_only_what_was_given() -> None:
    assert _requests.create_body(vcpus=0.5) == {"resources": {"vcpus": 0.5}}
    assert _requests.create_body(memory_mib=1024) == {"resources": {"memory": 1024}}


def test_false_and_empty_values_are_sent() -> None:
    body = _requests.create_body(persistent=False, ports=[], env={}, tags={})
    assert body == {"persistent": False, "ports": [], "env": {}, "tags": {}}


@pytest.mark.parametrize("mode", ["allow-all", "deny-all"])
def test_network_policy_shorthand(mode: str) -> None:
    assert _requests.create_body(network_policy=mode)["networkPolicy"] == {"mode": mode}
    assert _requests.update_body(network_policy=mode)["networkPolicy"] == {"mode": mode}


def test_network_policy_objects_pass_through() -> None:
    policy = {"allow": ["example.com"], "subnets": {"deny": ["10.0.0.0/8"]}}
    body = _requests.create_body(network_policy=policy)
    assert body["networkPolicy"] == policy
    assert body["networkPolicy"] is not policy  # a copy: the caller's dict is not shared
    stored = CreateSandboxRequest.model_validate(body).network_policy
    assert stored is not None
    assert stored["mode"] == "custom" and stored["allow"] == ["example.com"]


def test_update_body() -> None:
    body = _requests.update_body(
        ports=[4000],
        timeout=timedelta(seconds=30),
        vcpus=4,
        env={"B": "2"},
        tags={"k": "v"},
        persistent=True,
        network_policy="allow-all",
        snapshot_expiration=0,
        current_snapshot_id="snap_2",
    )
    assert body == {
        "ports": [4000],
        "timeout": 30_000,
        "resources": {"vcpus": 4},
        "env": {"B": "2"},
        "tags": {"k": "v"},
        "persistent": True,
        "networkPolicy": {"mode": "allow-all"},
        "snapshotExpiration": 0,
        "currentSnapshotId": "snap_2",
    }
    assert UpdateSandboxRequest.model_validate(body).current_snapshot_id == "snap_2"
    assert _requests.update_body() == {}


def test_fork_bodies_are_update_bodies_plus_a_name() -> None:
    body = _requests.update_body(tags={"role": "fork"}) | {"name": "child"}
    assert ForkSandboxRequest.model_validate(body).name == "child"


def test_list_sandboxes_query() -> None:
    call = _requests.list_sandboxes(
        1, "cur", name_prefix="web-", tags={"a": "1", "b": "2"}, sort_by="name", sort_order="asc"
    )
    assert (call.method, call.path) == ("GET", "/v2/sandboxes")
    assert call.params == {
        "limit": 1,
        "cursor": "cur",
        "namePrefix": "web-",
        "sortBy": "name",
        "sortOrder": "asc",
        "tags": ["a:1", "b:2"],
    }
    assert _requests.list_sandboxes(None, None).params == {}


def test_session_and_snapshot_listings_filter_by_sandbox() -> None:
    assert _requests.list_sessions("box", None).params == {"name": "box"}
    assert _requests.list_snapshots(None, "c").params == {"cursor": "c"}
    assert _requests.list_snapshots("box", None).path == "/v2/sandboxes/snapshots"


def entries(archive: bytes) -> dict[str, tuple[bytes, int]]:
    with tarfile.open(fileobj=io.BytesIO(archive), mode="r:gz") as tar:
        found = {}
        for member in tar.getmembers():
            extracted = tar.extractfile(member)
            assert extracted is not None
            found[member.name] = (extracted.read(), member.mode)
        return found


def test_archive_joins_relative_paths_to_the_cwd_and_keeps_absolute_ones() -> None:
    every_byte = bytes(range(256))
    archive = _requests.archive(
        {"notes.txt": "héllo", "sub/data.bin": every_byte, "/etc/motd": b"abs"},
        "/vercel/sandbox",
    )
    assert archive[:2] == b"\x1f\x8b"  # gzip
    assert entries(archive) == {
        "vercel/sandbox/notes.txt": ("héllo".encode(), 0o644),
        "vercel/sandbox/sub/data.bin": (every_byte, 0o644),
        "etc/motd": (b"abs", 0o644),
    }


def test_archive_of_items_keeps_their_modes() -> None:
    archive = _requests.archive(
        [("bin/run.sh", "#!/bin/sh\n", 0o755), ("/tmp/secret", b"s", 0o600)], "/home/user"
    )
    assert entries(archive) == {
        "home/user/bin/run.sh": (b"#!/bin/sh\n", 0o755),
        "tmp/secret": (b"s", 0o600),
    }


def test_archive_accepts_a_generator_of_items() -> None:
    archive = _requests.archive((("f", "x", 0o640) for _ in range(1)), "/")
    assert entries(archive) == {"f": (b"x", 0o640)}


def test_write_call_extracts_at_the_root() -> None:
    call = _requests.write("sbx_1", b"tar")
    assert (call.method, call.path) == ("POST", "/v2/sandboxes/sessions/sbx_1/fs/write")
    assert call.content == b"tar"
    assert call.headers == {"content-type": "application/gzip", "x-cwd": "/"}


def test_fs_call() -> None:
    call = _requests.fs("sbx_1", "stat", {"path": "a"})
    assert (call.method, call.path, call.json) == (
        "POST",
        "/v2/sandboxes/sessions/sbx_1/fs/stat",
        {"path": "a"},
    )
