"""Vercel's official JS SDK (`@vercel/sandbox` 3.5.0), unmodified, against a real emberd.

Each flow is a Node script in js/ that drives the SDK and prints one JSON report; these tests
assert on the report and check emberd's side over plain HTTP. The SDK reaches emberd only
through the public `fetch` option (js/lib.mjs), which refuses any other destination.
"""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from .conftest import unique_name

pytestmark = pytest.mark.integration


def sandbox_requests(report: dict[str, Any]) -> list[str]:
    requests: list[str] = report["requests"]
    assert all(" /v" in r for r in requests), requests  # all of them Sandbox API paths
    return requests


def test_lifecycle(js: Any, api: httpx.Client, names: list[str]) -> None:
    name = unique_name("js-life")
    names.append(name)
    report = js("lifecycle.mjs", name)

    created = report["created"]
    assert created["name"] == name
    assert created["status"] == "running"
    assert created["persistent"] is True
    assert created["tags"] == {"suite": "compat", "flow": "lifecycle"}
    assert created["cwd"] == "/vercel/sandbox"
    assert created["sessionTimeout"] == 120_000
    [route] = created["routes"]
    assert route["port"] == 3000
    assert route["subdomain"] and route["subdomain"] in route["url"]

    assert report["blocking"]["exitCode"] == 3
    assert report["blocking"]["stdout"] == "hello from env\n"  # the sandbox's env
    assert report["blocking"]["stderr"] == "to-stderr\n"
    assert report["withOptions"] == {"exitCode": 0, "stdout": "/tmp\nper-command\n"}

    assert report["detachedStartExitCode"] is None  # still running when runCommand returned
    detached = report["detached"]
    assert detached["exitCode"] == 5
    assert detached["stdout"] == "line1\nline2\nline3\n"
    assert detached["stderr"] == "finished\n"
    streamed = {
        stream: "".join(log["data"] for log in detached["logs"] if log["stream"] == stream)
        for stream in ("stdout", "stderr")
    }
    assert streamed == {"stdout": "line1\nline2\nline3\n", "stderr": "finished\n"}
    assert report["killed"] == {"exitCode": 128 + 15}

    assert report["read"] == {
        "absolute": "written by the JS SDK\n",
        "relative": [0, 1, 2, 250, 255],  # relative paths land in the sandbox's cwd
        "withCwd": "written by the JS SDK\n",
        "missing": None,  # a 404 reads as "no such file"
    }
    assert report["mkDir"] == {"testExitCode": 0}
    assert report["extendTimeout"] == {"before": 120_000, "after": 180_000}
    assert report["stopped"] == {"status": "stopped", "sandboxStatus": "stopped"}
    assert report["deleted"] is True
    assert api.get(f"/v2/sandboxes/{name}").status_code == 404

    requests = sandbox_requests(report)
    assert requests[0] == "POST /v3/sandboxes"
    assert requests[-1] == f"DELETE /v2/sandboxes/{name}"


def test_stopped_sandbox_resumes(js: Any, api: httpx.Client, names: list[str]) -> None:
    name = unique_name("js-resume")
    names.append(name)
    report = js("resume.mjs", name)

    first = report["firstSession"]
    assert report["fetched"] == {"status": "stopped", "session": first}
    # The read on the ended session got a 410; the SDK resumed and retried on a new session.
    after = report["afterResume"]
    assert after["content"] == "survives a stop"
    assert after["status"] == "running"
    assert after["session"] != first
    assert report["commandAfterResume"] == {"exitCode": 0, "stdout": "survives a stop"}
    # `resume: true` resumes at once and calls onResume.
    assert report["eager"]["status"] == "running"
    assert report["eager"]["session"] not in (first, after["session"])
    assert report["resumedEvents"] == ["resumed"]

    requests = sandbox_requests(report)
    assert f"POST /v2/sandboxes/sessions/{first}/fs/read" in requests
    assert f"POST /v2/sandboxes/sessions/{after['session']}/fs/read" in requests
    assert api.get(f"/v2/sandboxes/{name}").status_code == 404


def test_get_or_create_and_list_with_tags(js: Any, names: list[str]) -> None:
    prefix = unique_name("js-list")
    red, blue = f"{prefix}-red", f"{prefix}-blue"
    names.extend([red, blue])
    report = js("listing.mjs", prefix)

    assert report["getOrCreate"] == {
        "first": red,
        "second": red,
        "sameSession": True,
        "onCreateCalls": [red],  # only the call that created it
    }
    assert report["listRed"] == [red]
    assert report["listRedTags"] == [{"color": "red"}]
    assert report["listBlue"] == [blue]
    assert report["byPrefix"] == sorted([red, blue], reverse=True)  # name, descending
    assert report["pagination"] == {"count": 2, "next": None}
    assert report["paginated"] == sorted([red, blue])  # one a page, through the cursor
    requests = sandbox_requests(report)
    assert requests.count("GET /v2/sandboxes") >= 5


def test_snapshots_restore_and_fork(js: Any, api: httpx.Client, names: list[str]) -> None:
    name = unique_name("js-snap")
    names.extend([name, f"{name}-restored", f"{name}-fork"])
    report = js("snapshots.mjs", name)

    snapshot = report["snapshot"]
    assert snapshot["id"].startswith("snap_")
    assert snapshot["status"] == "created"
    assert snapshot["sourceSessionId"] == snapshot["expectedSourceSession"]
    assert snapshot["sizeBytes"] > 0
    assert snapshot["hasExpiry"] is True
    assert snapshot["sessionStatus"] == "stopped"  # a snapshot ends the session

    assert snapshot["id"] in report["listed"]
    assert report["got"]["id"] == snapshot["id"] and report["got"]["status"] == "created"
    assert report["tree"] == {"nodes": [snapshot["id"]], "anchor": snapshot["id"]}
    assert report["restored"] == {
        "content": "in the snapshot",
        "sourceSnapshotId": snapshot["id"],
    }
    assert report["fork"] == {"name": f"{name}-fork", "content": "in the snapshot"}
    assert report["deleted"] == {"status": "deleted"}
    assert report["afterDelete"] == "deleted"
    for gone in (name, f"{name}-restored", f"{name}-fork"):
        assert api.get(f"/v2/sandboxes/{gone}").status_code == 404


def test_network_policy_on_create_and_while_stopped(js: Any, names: list[str]) -> None:
    name = unique_name("js-net")
    names.append(name)
    report = js("network.mjs", name, "stopped")
    assert report["created"] == "deny-all"
    # A stopped sandbox: the PATCH saves it; the live update gets a 410, which the SDK skips.
    expected = {"allow": ["example.com"], "subnets": {"allow": [], "deny": []}}
    assert report["updated"] == expected
    assert report["fetched"] == expected


@pytest.mark.networked
def test_network_policy_update_while_running(js: Any, names: list[str]) -> None:
    name = unique_name("js-net-live")
    names.append(name)
    report = js("network.mjs", name, "running")
    assert report["updated"] == {"allow": ["example.com"], "subnets": {"allow": [], "deny": []}}
