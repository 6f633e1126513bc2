"""emberd over HTTP: bad input is a 400 (or a 404/409) with a stable code and changes nothing.

The rule (DESIGN.md, reference §9): every malformed body, name, path,
duration, tag, port list or cursor is answered with `{"error": {"code",
"message"}}`, never with a 500, and leaves the server's state as it was.
"""

from __future__ import annotations

import base64
import io
import json
import tarfile
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from ..conftest import Emberd
from .api_helpers import assert_error, creates_no_sandbox, delete_quietly, sandbox_names
from .test_api_lifecycle import api, create, unique, write_file

pytestmark = pytest.mark.integration

__all__ = ["api"]  # the fixture, re-exported so pytest finds it here


def _tags(n: int) -> dict[str, str]:
    return {f"k{i}": "v" for i in range(n)}


def _cursor(value: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(value).encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def box(emberd: Emberd) -> Iterator[tuple[str, str]]:
    """One running sandbox for the session-level checks: (name, session id)."""
    with emberd.client() as client:
        created = create(client, name=unique("inputs"))
    name, sid = created["sandbox"]["name"], created["session"]["id"]
    yield name, sid
    delete_quietly(emberd, name)


# -- create -------------------------------------------------------------------------

BAD_NAMES = [
    pytest.param("a b", id="space"),
    pytest.param("x" * 129, id="129-chars"),
    pytest.param("ünï", id="non-ascii"),
    pytest.param("", id="empty"),
    pytest.param("a/b", id="slash"),
    pytest.param("sessions", id="reserved-sessions"),
    pytest.param("snapshots", id="reserved-snapshots"),
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_create_with_a_bad_name_is_invalid_name(
    emberd: Emberd, api: httpx.Client, name: str
) -> None:
    with creates_no_sandbox(emberd):
        assert_error(api.post("/v3/sandboxes", json={"name": name}), 400, "invalid_name")


BAD_CREATES = [
    pytest.param({"tags": _tags(6)}, "bad_request", id="6-tags"),
    pytest.param({"tags": {"a:b": "c"}}, "bad_request", id="tag-key-with-colon"),
    pytest.param({"tags": {"k": 1}}, "bad_request", id="tag-value-not-a-string"),
    pytest.param({"ports": list(range(3000, 3016))}, "bad_request", id="16-ports"),
    pytest.param({"ports": [0]}, "bad_request", id="port-0"),
    pytest.param({"ports": [70000]}, "bad_request", id="port-70000"),
    pytest.param({"ports": [8080, 8080]}, "bad_request", id="duplicate-ports"),
    pytest.param({"ports": "80"}, "bad_request", id="ports-a-string"),
    pytest.param({"ports": ["eighty"]}, "bad_request", id="port-a-word"),
    pytest.param({"timeout": -1}, "bad_request", id="negative-timeout"),
    pytest.param({"timeout": 0}, "bad_request", id="zero-timeout"),
    pytest.param({"timeout": 10**10}, "bad_request", id="timeout-above-server-max"),
    pytest.param({"timeout": 10**20}, "bad_request", id="huge-timeout"),
    pytest.param({"timeout": "soon"}, "bad_request", id="timeout-a-string"),
    pytest.param({"resources": {"vcpus": 3}}, "bad_request", id="vcpus-3"),
    pytest.param({"resources": {"vcpus": "two"}}, "bad_request", id="vcpus-a-string"),
    pytest.param({"resources": {"memory": 1}}, "bad_request", id="memory-1"),
    pytest.param({"bogus": 1}, "bad_request", id="unknown-field"),
    pytest.param({"persistent": "maybe"}, "bad_request", id="persistent-not-a-bool"),
    pytest.param({"env": {"A": 1}}, "bad_request", id="env-value-not-a-string"),
    pytest.param({"env": {"A=B": "x"}}, "bad_request", id="env-name-with-equals"),
    pytest.param({"env": ["A=1"]}, "bad_request", id="env-a-list"),
    pytest.param({"snapshotExpiration": 1000}, "bad_request", id="snapshot-expiration-1s"),
    pytest.param({"snapshotExpiration": -1}, "bad_request", id="snapshot-expiration-negative"),
    pytest.param({"keepLastSnapshots": {"count": 0}}, "bad_request", id="keep-last-0"),
    pytest.param({"keepLastSnapshots": {"count": 11}}, "bad_request", id="keep-last-11"),
    pytest.param({"keepLastSnapshots": 3}, "bad_request", id="keep-last-a-number"),
    pytest.param({"networkPolicy": {"mode": "nope"}}, "bad_request", id="policy-mode-nope"),
    pytest.param({"networkPolicy": "nope"}, "bad_request", id="policy-string-nope"),
    pytest.param({"networkPolicy": 5}, "bad_request", id="policy-a-number"),
    pytest.param(
        {"networkPolicy": {"subnets": {"allow": ["10.0.0.0/99"]}}},
        "bad_request",
        id="policy-bad-cidr",
    ),
    pytest.param(
        {"networkPolicy": {"subnets": {"deny": ["not-an-ip"]}}},
        "bad_request",
        id="policy-bad-deny-cidr",
    ),
    pytest.param({"networkPolicy": {"allow": [5]}}, "bad_request", id="policy-allow-not-strings"),
    pytest.param({"networkPolicy": {"bogus": []}}, "bad_request", id="policy-unknown-field"),
    pytest.param(
        {"networkPolicy": {"allow": ["https://x.test/"]}}, "bad_request", id="policy-domain-url"
    ),
    pytest.param(
        {"networkPolicy": {"allow": {"x.test": [{"transform": [{"headers": {"a b": "v"}}]}]}}},
        "bad_request",
        id="policy-header-name",
    ),
    pytest.param(
        {
            "networkPolicy": {
                "allow": {"x.test": [{"transform": [{"headers": {"a": "v\r\nb: c"}}]}]}
            }
        },
        "bad_request",
        id="policy-header-value-crlf",
    ),
    pytest.param({"image": "nope/not-here:1"}, "bad_request", id="image-not-available"),
    pytest.param({"runtime": "cobol85"}, "bad_request", id="unknown-runtime"),
    pytest.param(
        {"source": {"type": "snapshot", "snapshotId": "snap_x"}, "image": "default"},
        "bad_request",
        id="snapshot-source-with-image",
    ),
    pytest.param(
        {"source": {"type": "git", "url": "https://example.com/x.git"}},
        "bad_request",
        id="source-type-git",
    ),
    pytest.param({"source": {"type": "snapshot"}}, "bad_request", id="source-without-id"),
    pytest.param(
        {"source": {"type": "snapshot", "snapshotId": "snap_doesnotexist"}},
        "snapshot_not_found",
        id="source-snapshot-missing",
    ),
]


@pytest.mark.parametrize(("body", "code"), BAD_CREATES)
def test_bad_create_is_rejected_and_creates_nothing(
    emberd: Emberd, api: httpx.Client, body: dict[str, Any], code: str
) -> None:
    name = unique("bad")
    with creates_no_sandbox(emberd, name):
        response = api.post("/v3/sandboxes", json={"name": name, **body})
        # A missing snapshot is "not found"; everything else is the client's malformed input.
        assert_error(response, 404 if code == "snapshot_not_found" else 400, code)


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param({"allow": {"example.com": [{"transform": "x"}]}}, id="transform-a-string"),
        pytest.param({"allow": {"example.com": [{"transform": [5]}]}}, id="transform-a-number"),
        pytest.param({"allow": {"example.com": [{"transform": None}]}}, id="transform-null"),
        pytest.param(
            {"allow": {"example.com": [{"transform": [{"headers": 5}]}]}},
            id="transform-headers-a-number",
        ),
    ],
)
def test_malformed_policy_rules_are_rejected_on_create(
    emberd: Emberd, api: httpx.Client, policy: dict[str, Any]
) -> None:
    name = unique("badpol")
    with creates_no_sandbox(emberd, name):
        response = api.post("/v3/sandboxes", json={"name": name, "networkPolicy": policy})
        assert_error(response, 400, "bad_request")


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        pytest.param(b"{not json", "application/json", id="malformed-json"),
        pytest.param(b'{"name": "x"', "application/json", id="truncated-json"),
        pytest.param(b"", "application/json", id="empty-body"),
        pytest.param(b"[]", "application/json", id="a-list"),
        pytest.param(b'"sandbox"', "application/json", id="a-string"),
        pytest.param(b"null", "application/json", id="null"),
        pytest.param(b"name=x", "application/x-www-form-urlencoded", id="form-encoded"),
        pytest.param(b'{"name": "\xff"}', "application/json", id="invalid-utf8"),
    ],
)
def test_create_with_a_malformed_body_is_a_400(
    emberd: Emberd, api: httpx.Client, content: bytes, content_type: str
) -> None:
    with creates_no_sandbox(emberd):
        response = api.post(
            "/v3/sandboxes", content=content, headers={"content-type": content_type}
        )
        assert_error(response, 400, "bad_request")


def test_private_double_underscore_fields_are_ignored(api: httpx.Client) -> None:
    name = unique("private")
    response = api.post(
        "/v3/sandboxes",
        json={"name": name, "__interactive": True, "__includeSystemRoutes": True, "ports": [3000]},
    )
    assert response.status_code == 200, response.text
    sandbox = response.json()["sandbox"]
    assert sandbox["name"] == name and sandbox["ports"] == [3000]
    assert not any(key.startswith("__") for key in sandbox)
    assert api.delete(f"/v2/sandboxes/{name}").status_code == 200


def test_duplicate_name_is_a_409_and_leaves_the_first_sandbox_alone(
    emberd: Emberd, api: httpx.Client
) -> None:
    first = create(api, tags={"which": "first"}, env={"A": "1"})
    name = first["sandbox"]["name"]
    before = api.get(f"/v2/sandboxes/{name}").json()
    with creates_no_sandbox(emberd):
        again = api.post("/v3/sandboxes", json={"name": name, "tags": {"which": "second"}})
        assert_error(again, 409, "sandbox_already_exists")
        forked = api.post(f"/v2/sandboxes/{name}/fork", json={"name": name})
        assert_error(forked, 409, "sandbox_already_exists")
    after = api.get(f"/v2/sandboxes/{name}").json()
    assert after == before
    assert after["sandbox"]["tags"] == {"which": "first"}
    assert api.delete(f"/v2/sandboxes/{name}").status_code == 200


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"name": "a b"}, "invalid_name", id="bad-name"),
        pytest.param({"name": "snapshots"}, "invalid_name", id="reserved-name"),
        pytest.param({"bogus": True}, "bad_request", id="unknown-field"),
        pytest.param({"ports": [0]}, "bad_request", id="port-0"),
        pytest.param({"timeout": 0}, "bad_request", id="zero-timeout"),
    ],
)
def test_bad_fork_is_rejected_and_creates_nothing(
    emberd: Emberd, api: httpx.Client, box: tuple[str, str], body: dict[str, Any], code: str
) -> None:
    with creates_no_sandbox(emberd):
        assert_error(api.post(f"/v2/sandboxes/{box[0]}/fork", json=body), 400, code)


def test_fork_of_a_missing_sandbox_is_a_404(emberd: Emberd, api: httpx.Client) -> None:
    with creates_no_sandbox(emberd):
        response = api.post("/v2/sandboxes/no-such-sandbox-here/fork", json={})
        assert_error(response, 404, "sandbox_not_found")


# -- list ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param({"limit": "0"}, "bad_request", id="limit-0"),
        pytest.param({"limit": "101"}, "bad_request", id="limit-101"),
        pytest.param({"limit": "-1"}, "bad_request", id="limit-negative"),
        pytest.param({"limit": "abc"}, "bad_request", id="limit-abc"),
        pytest.param({"limit": "1.5"}, "bad_request", id="limit-fraction"),
        pytest.param({"limit": str(10**30)}, "bad_request", id="limit-huge"),
        pytest.param({"sortBy": "bogus"}, "bad_request", id="sort-by-bogus"),
        pytest.param({"sortOrder": "sideways"}, "bad_request", id="sort-order-sideways"),
        pytest.param({"tags": "novalue"}, "bad_request", id="tag-without-colon"),
        pytest.param({"tags": ":value"}, "bad_request", id="tag-without-key"),
        pytest.param({"cursor": "garbage"}, "invalid_cursor", id="cursor-garbage"),
        pytest.param({"cursor": "!!!!"}, "invalid_cursor", id="cursor-not-base64"),
        pytest.param({"cursor": _cursor([1, 2])}, "invalid_cursor", id="cursor-id-not-a-string"),
        pytest.param({"cursor": _cursor(["a"])}, "invalid_cursor", id="cursor-one-element"),
        pytest.param({"cursor": _cursor({"a": 1})}, "invalid_cursor", id="cursor-an-object"),
        pytest.param({"cursor": _cursor([10**30, "x"])}, "invalid_cursor", id="cursor-huge-int"),
        pytest.param({"cursor": _cursor([True, "x"])}, "invalid_cursor", id="cursor-a-bool"),
    ],
)
def test_bad_list_queries_are_400(api: httpx.Client, params: dict[str, str], code: str) -> None:
    assert_error(api.get("/v2/sandboxes", params=params), 400, code)


@pytest.mark.parametrize("path", ["/v2/sandboxes/sessions", "/v2/sandboxes/snapshots"])
@pytest.mark.parametrize(
    ("params", "code"),
    [
        pytest.param({"limit": "0"}, "bad_request", id="limit-0"),
        pytest.param({"limit": "101"}, "bad_request", id="limit-101"),
        pytest.param({"limit": "abc"}, "bad_request", id="limit-abc"),
        pytest.param({"sortOrder": "sideways"}, "bad_request", id="sort-order-sideways"),
        pytest.param({"cursor": "garbage"}, "invalid_cursor", id="cursor-garbage"),
        pytest.param({"cursor": _cursor([10**30, "x"])}, "invalid_cursor", id="cursor-huge-int"),
        pytest.param({"cursor": _cursor([True, "x"])}, "invalid_cursor", id="cursor-a-bool"),
    ],
)
def test_bad_session_and_snapshot_list_queries_are_400(
    api: httpx.Client, path: str, params: dict[str, str], code: str
) -> None:
    assert_error(api.get(path, params=params), 400, code)


def test_snapshot_tree_needs_a_snapshot_id(api: httpx.Client) -> None:
    assert_error(api.get("/v2/sandboxes/snapshots/tree"), 400, "bad_request")
    missing = api.get("/v2/sandboxes/snapshots/tree", params={"snapshotId": "snap_nope"})
    assert_error(missing, 404, "snapshot_not_found")
    assert_error(api.get("/v2/sandboxes/snapshots/snap_nope"), 404, "snapshot_not_found")


@pytest.mark.parametrize("method", ["GET", "PATCH", "DELETE"])
def test_bad_names_in_paths_are_invalid_name(api: httpx.Client, method: str) -> None:
    kwargs: dict[str, Any] = {"json": {}} if method == "PATCH" else {}
    response = api.request(method, "/v2/sandboxes/a%20b", **kwargs)
    assert_error(response, 400, "invalid_name")
    missing = api.request(method, "/v2/sandboxes/no-such-sandbox-here", **kwargs)
    assert_error(missing, 404, "sandbox_not_found")


def test_unknown_routes_and_methods_use_the_error_shape(api: httpx.Client) -> None:
    assert_error(api.get("/v2/nothing-here"), 404, "not_found")
    assert_error(api.put("/v2/sandboxes", json={}), 405, "method_not_allowed")
    assert_error(api.get("/v2/sandboxes/x", params={"resume": "maybe"}), 400, "bad_request")


# -- commands -----------------------------------------------------------------------


def _commands(api: httpx.Client, sid: str) -> list[str]:
    response = api.get(f"/v2/sandboxes/sessions/{sid}/cmd")
    assert response.status_code == 200, response.text
    return [c["id"] for c in response.json()["commands"]]


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"command": ""}, id="empty-command"),
        pytest.param({}, id="no-command"),
        pytest.param({"command": 5}, id="command-a-number"),
        pytest.param({"command": "true", "env": {"A": 1}}, id="env-int"),
        pytest.param({"command": "true", "env": {"A": None}}, id="env-null"),
        pytest.param({"command": "true", "env": {"A": ["x"]}}, id="env-list"),
        pytest.param({"command": "true", "env": "A=1"}, id="env-a-string"),
        pytest.param({"command": "true", "env": {"": "x"}}, id="env-empty-name"),
        pytest.param({"command": "true", "args": "x"}, id="args-a-string"),
        pytest.param({"command": "true", "args": [1]}, id="args-not-strings"),
        pytest.param({"command": "true", "timeout": 0}, id="zero-timeout"),
        pytest.param({"command": "true", "timeout": -5}, id="negative-timeout"),
        pytest.param({"command": "true", "sudo": "maybe"}, id="sudo-not-a-bool"),
        pytest.param({"command": "true", "cwd": 5}, id="cwd-a-number"),
        pytest.param({"command": "true", "bogus": 1}, id="unknown-field"),
        pytest.param({"command": "a\u0000b"}, id="nul-in-command"),
        pytest.param({"command": "true", "args": ["a\u0000b"]}, id="nul-in-args"),
    ],
)
def test_bad_commands_are_400_and_start_nothing(
    api: httpx.Client, box: tuple[str, str], body: dict[str, Any]
) -> None:
    sid = box[1]
    before = _commands(api, sid)
    assert_error(api.post(f"/v2/sandboxes/sessions/{sid}/cmd", json=body), 400, "bad_request")
    assert_error(
        api.post(f"/v2/sandboxes/sessions/{sid}/cmd", json=body, params={"wait": "true"}),
        400,
        "bad_request",
    )
    assert _commands(api, sid) == before


def test_malformed_command_body_is_400(api: httpx.Client, box: tuple[str, str]) -> None:
    response = api.post(
        f"/v2/sandboxes/sessions/{box[1]}/cmd",
        content=b'{"command": ',
        headers={"content-type": "application/json"},
    )
    assert_error(response, 400, "bad_request")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({"signal": 99}, id="signal-99"),
        pytest.param({"signal": "TERM"}, id="signal-name"),
        pytest.param({"signal": 0}, id="signal-0"),
        pytest.param({"signal": -9}, id="signal-negative"),
        pytest.param({"signal": 9.5}, id="signal-fraction"),
        pytest.param({"signal": None}, id="signal-null"),
        pytest.param({"bogus": 1}, id="unknown-field"),
        pytest.param(b"{oops", id="malformed-json"),
    ],
)
def test_bad_kill_is_400_and_the_command_keeps_running(
    api: httpx.Client, box: tuple[str, str], body: dict[str, Any] | bytes
) -> None:
    sid = box[1]
    started = api.post(
        f"/v2/sandboxes/sessions/{sid}/cmd", json={"command": "sleep", "args": ["100"]}
    )
    assert started.status_code == 200, started.text
    cmd = started.json()["command"]["id"]
    url = f"/v2/sandboxes/sessions/{sid}/cmd/{cmd}"
    try:
        if isinstance(body, bytes):
            response = api.post(
                f"{url}/kill", content=body, headers={"content-type": "application/json"}
            )
        else:
            response = api.post(f"{url}/kill", json=body)
        assert_error(response, 400, "bad_request")
        still = api.get(url).json()["command"]
        assert still["exitCode"] is None, still
    finally:
        api.post(f"{url}/kill", json={"signal": 9})
    assert api.get(url, params={"wait": "true"}).json()["command"]["exitCode"] == 137


def test_unknown_session_is_session_not_found(api: httpx.Client) -> None:
    base = "/v2/sandboxes/sessions/sbx_doesnotexist"
    for method, path, body in [
        ("GET", "", None),
        ("POST", "/cmd", {"command": "true"}),
        ("GET", "/cmd", None),
        ("GET", "/cmd/cmd_nope", None),
        ("POST", "/cmd/cmd_nope/kill", {"signal": 9}),
        ("GET", "/cmd/cmd_nope/logs", None),
        ("POST", "/fs/read", {"path": "x"}),
        ("POST", "/fs/mkdir", {"path": "x"}),
        ("POST", "/extend-timeout", {"duration": 1000}),
        ("POST", "/stop", None),
        ("POST", "/snapshot", None),
    ]:
        response = api.request(method, base + path, json=body)
        assert_error(response, 404, "session_not_found")


def test_unknown_command_is_command_not_found(api: httpx.Client, box: tuple[str, str]) -> None:
    base = f"/v2/sandboxes/sessions/{box[1]}/cmd/cmd_doesnotexist"
    assert_error(api.get(base), 404, "command_not_found")
    assert_error(api.get(base, params={"wait": "true"}), 404, "command_not_found")
    assert_error(api.get(f"{base}/logs"), 404, "command_not_found")
    assert_error(api.post(f"{base}/kill", json={"signal": 9}), 404, "command_not_found")


# -- files ------------------------------------------------------------------------


def _tar(*names: str, content: bytes = b"evil") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name in names:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


def _assert_missing(api: httpx.Client, sid: str, *paths: str) -> None:
    for path in paths:
        response = api.post(f"/v2/sandboxes/sessions/{sid}/fs/read", json={"path": path})
        assert_error(response, 404, "file_not_found")


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({"path": ""}, "invalid_path", id="empty-path"),
        pytest.param({"path": "a\u0000b"}, "invalid_path", id="nul-in-path"),
        pytest.param({"path": "x", "cwd": "a\u0000"}, "invalid_path", id="nul-in-cwd"),
        pytest.param({}, "bad_request", id="no-path"),
        pytest.param({"path": 5}, "bad_request", id="path-a-number"),
        pytest.param({"path": "x", "bogus": 1}, "bad_request", id="unknown-field"),
    ],
)
def test_bad_read_is_400(
    api: httpx.Client, box: tuple[str, str], body: dict[str, Any], code: str
) -> None:
    assert_error(api.post(f"/v2/sandboxes/sessions/{box[1]}/fs/read", json=body), 400, code)


@pytest.mark.parametrize(
    ("body", "code"),
    [
        pytest.param({}, "bad_request", id="no-path"),
        pytest.param({"recursive": True}, "bad_request", id="only-recursive"),
        pytest.param({"path": ""}, "invalid_path", id="empty-path"),
        pytest.param({"path": ["a"]}, "bad_request", id="path-a-list"),
    ],
)
def test_bad_mkdir_is_400(
    api: httpx.Client, box: tuple[str, str], body: dict[str, Any], code: str
) -> None:
    assert_error(api.post(f"/v2/sandboxes/sessions/{box[1]}/fs/mkdir", json=body), 400, code)


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b"not a tar", id="text"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\x1f\x8b\x08\x00garbage", id="broken-gzip"),
    ],
)
def test_write_of_a_non_tar_body_is_400(
    api: httpx.Client, box: tuple[str, str], content: bytes
) -> None:
    response = api.post(
        f"/v2/sandboxes/sessions/{box[1]}/fs/write",
        content=content,
        headers={"x-cwd": "/vercel/sandbox", "content-type": "application/gzip"},
    )
    assert_error(response, 400, "bad_request")


@pytest.mark.parametrize(
    ("entries", "landing"),
    [
        pytest.param(("../../x",), ("/x", "/vercel/x"), id="climbing"),
        pytest.param(("../../../../../x",), ("/x", "/vercel/x"), id="climbing-far"),
        pytest.param(
            ("first-ok.txt", "../../x"),
            ("/x", "/vercel/x", "/vercel/sandbox/first-ok.txt"),
            id="good-then-climbing",
        ),
        pytest.param(("/abs/x",), ("/abs/x", "/vercel/sandbox/abs/x"), id="absolute"),
    ],
)
def test_write_of_an_escaping_tar_is_400_and_writes_nothing(
    api: httpx.Client, box: tuple[str, str], entries: tuple[str, ...], landing: tuple[str, ...]
) -> None:
    sid = box[1]
    response = api.post(
        f"/v2/sandboxes/sessions/{sid}/fs/write",
        content=_tar(*entries),
        headers={"x-cwd": "/vercel/sandbox", "content-type": "application/gzip"},
    )
    assert_error(response, 400, "invalid_path")
    _assert_missing(api, sid, *landing)
    # The session still works: a good archive is written.
    write_file(api, sid, "after-bad-tar.txt", b"ok", cwd="/vercel/sandbox")
    read = api.post(f"/v2/sandboxes/sessions/{sid}/fs/read", json={"path": "after-bad-tar.txt"})
    assert read.status_code == 200 and read.content == b"ok"


# -- update, extend-timeout, snapshot --------------------------------------------------


BAD_PATCHES = [
    pytest.param({"tags": _tags(6)}, 400, "bad_request", id="6-tags"),
    pytest.param({"tags": {"a": "b"}, "ports": [0]}, 400, "bad_request", id="good-tags-bad-port"),
    pytest.param({"currentSnapshotId": "snap_nope"}, 404, "snapshot_not_found", id="bad-snapshot"),
    pytest.param(
        {"tags": {"changed": "yes"}, "env": {"B": "2"}, "currentSnapshotId": "snap_nope"},
        404,
        "snapshot_not_found",
        id="good-fields-then-bad-snapshot",
    ),
    pytest.param({"currentSnapshotId": ""}, 404, "snapshot_not_found", id="empty-snapshot-id"),
    pytest.param({"currentSnapshotId": 5}, 400, "bad_request", id="snapshot-id-a-number"),
    pytest.param({"ports": [70000]}, 400, "bad_request", id="port-70000"),
    pytest.param({"timeout": 10**10}, 400, "bad_request", id="timeout-above-max"),
    pytest.param(
        {"ports": [8000], "timeout": 10**10}, 400, "bad_request", id="good-ports-bad-timeout"
    ),
    pytest.param({"timeout": 0}, 400, "bad_request", id="zero-timeout"),
    pytest.param({"resources": {"vcpus": 3}}, 400, "bad_request", id="vcpus-3"),
    pytest.param({"networkPolicy": {"mode": "nope"}}, 400, "bad_request", id="policy-nope"),
    pytest.param({"keepLastSnapshots": {"count": 0}}, 400, "bad_request", id="keep-last-0"),
    pytest.param({"snapshotExpiration": 1000}, 400, "bad_request", id="expiration-1s"),
    pytest.param({"env": {"A": 1}}, 400, "bad_request", id="env-int"),
    pytest.param({"persistent": "x"}, 400, "bad_request", id="persistent-not-a-bool"),
    pytest.param({"name": "renamed"}, 400, "bad_request", id="rename"),
    pytest.param({"bogus": 1}, 400, "bad_request", id="unknown-field"),
]


@pytest.mark.parametrize(("body", "status", "code"), BAD_PATCHES)
def test_bad_update_is_rejected_and_changes_nothing(
    api: httpx.Client, box: tuple[str, str], body: dict[str, Any], status: int, code: str
) -> None:
    name = box[0]
    before = api.get(f"/v2/sandboxes/{name}").json()
    assert_error(api.patch(f"/v2/sandboxes/{name}", json=body), status, code)
    assert api.get(f"/v2/sandboxes/{name}").json() == before


def test_malformed_policy_rules_are_rejected_on_update(emberd: Emberd, api: httpx.Client) -> None:
    name = create(api, persistent=False)["sandbox"]["name"]
    try:
        before = api.get(f"/v2/sandboxes/{name}").json()
        response = api.patch(
            f"/v2/sandboxes/{name}",
            json={"networkPolicy": {"allow": {"example.com": [{"transform": "x"}]}}},
        )
        assert_error(response, 400, "bad_request")
        assert api.get(f"/v2/sandboxes/{name}").json() == before
        sandbox_names(api)  # the project's list still answers
    finally:
        delete_quietly(emberd, name)  # a stored bad policy must not break later tests


@pytest.mark.parametrize(
    "body",
    [
        pytest.param({}, id="missing"),
        pytest.param({"duration": 0}, id="zero"),
        pytest.param({"duration": -5}, id="negative"),
        pytest.param({"duration": "x"}, id="a-string"),
        pytest.param({"duration": None}, id="null"),
        pytest.param({"duration": 1.5}, id="fraction"),
        pytest.param({"duration": 10**20}, id="huge"),
        pytest.param({"duration": 1000, "bogus": 1}, id="unknown-field"),
    ],
)
def test_bad_extend_timeout_is_400_and_keeps_the_timeout(
    api: httpx.Client, box: tuple[str, str], body: dict[str, Any]
) -> None:
    url = f"/v2/sandboxes/sessions/{box[1]}"
    before = api.get(url).json()["session"]
    assert_error(api.post(f"{url}/extend-timeout", json=body), 400, "bad_request")
    after = api.get(url).json()["session"]
    kept = ("timeout", "expiresAt", "status")
    assert {k: after.get(k) for k in kept} == {k: before.get(k) for k in kept}
    assert before["status"] == "running"


def test_extend_timeout_without_a_body_is_400(api: httpx.Client, box: tuple[str, str]) -> None:
    response = api.post(f"/v2/sandboxes/sessions/{box[1]}/extend-timeout")
    assert_error(response, 400, "bad_request")


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(b'{"expiration": 5}', id="expiration-5ms"),
        pytest.param(b'{"expiration": "soon"}', id="expiration-a-string"),
        pytest.param(b'{"bogus": 1}', id="unknown-field"),
        pytest.param(b"{bad", id="malformed-json"),
    ],
)
def test_bad_snapshot_request_is_400_and_the_session_keeps_running(
    api: httpx.Client, box: tuple[str, str], content: bytes
) -> None:
    url = f"/v2/sandboxes/sessions/{box[1]}"
    response = api.post(
        f"{url}/snapshot", content=content, headers={"content-type": "application/json"}
    )
    assert_error(response, 400, "bad_request")
    assert api.get(url).json()["session"]["status"] == "running"
    snapshots = api.get("/v2/sandboxes/snapshots", params={"name": box[0]}).json()
    assert snapshots["snapshots"] == []
