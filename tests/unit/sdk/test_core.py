"""`ember.sdk._core`: durations, NDJSON lines, and the flows driven by hand.

A flow yields `Call`s and `Sleep`s; these tests play the server, sending it
`httpx.Response` objects built here, and check what it asks for next.
"""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import pytest

from ember.sdk import Config, LogLine, _core
from ember.sdk._errors import EmberApiError
from ember.wire.command import Command
from ember.wire.errors import (
    EmberError,
    FilesystemError,
    SandboxNotFoundError,
    SandboxStoppedError,
    UnauthorizedError,
)
from ember.wire.sandbox import Sandbox, SandboxResponse
from ember.wire.session import Session

from .wire_data import command_json, error, ok, sandbox_json, sandbox_response, session_json

# -- ms ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("duration", "expected"),
    [
        (0, 0),
        (1, 1000),
        (90, 90_000),
        (1.5, 1500),
        (0.25, 250),
        (0.0004, 0),
        (2.0006, 2001),
        (timedelta(minutes=2), 120_000),
        (timedelta(milliseconds=250), 250),
        (timedelta(days=1, seconds=1), 86_401_000),
        (timedelta(0), 0),
    ],
)
def test_ms_converts_seconds_and_timedeltas(duration: float | timedelta, expected: int) -> None:
    assert _core.ms(duration) == expected
    assert isinstance(_core.ms(duration), int)


# -- Call.request ------------------------------------------------------------------------


def test_call_request_drops_none_params_and_adds_the_team() -> None:
    call = _core.Call("GET", "/v2/sandboxes", params={"limit": 5, "cursor": None})
    with httpx.Client(base_url="http://ember.test") as client:
        plain = call.request(client, Config("http://ember.test", "t"))
        scoped = call.request(client, Config("http://ember.test", "t", team_id="team_a"))
    assert plain.url == "http://ember.test/v2/sandboxes?limit=5"
    assert dict(scoped.url.params) == {"limit": "5", "teamId": "team_a"}


def test_call_request_carries_body_and_headers() -> None:
    call = _core.Call(
        "POST", "/x", content=b"\x1f\x8b", headers={"content-type": "application/gzip"}
    )
    with httpx.Client(base_url="http://ember.test") as client:
        request = call.request(client, Config("http://ember.test", "t"))
    assert request.method == "POST"
    assert request.content == b"\x1f\x8b"
    assert request.headers["content-type"] == "application/gzip"


# -- run_call ----------------------------------------------------------------------------


def test_run_call_waiting_streams_logs() -> None:
    call = _core.run_call(
        "sbx_9",
        "sh",
        ("-c", "true"),
        cwd="/tmp",
        env={"A": "1"},
        sudo=True,
        timeout=timedelta(seconds=3),
        wait=True,
    )
    assert (call.method, call.path, call.stream) == (
        "POST",
        "/v2/sandboxes/sessions/sbx_9/cmd",
        True,
    )
    assert call.json == {
        "command": "sh",
        "args": ["-c", "true"],
        "cwd": "/tmp",
        "env": {"A": "1"},
        "sudo": True,
        "timeout": 3000,
        "wait": True,
        "logs": True,
    }


def test_run_call_detached_leaves_out_what_is_unset() -> None:
    call = _core.run_call(
        "sbx_9", "cat", [], cwd=None, env=None, sudo=False, timeout=None, wait=False, stdin=True
    )
    assert call.stream is False
    assert call.json == {"command": "cat", "args": [], "sudo": False, "stdin": True}


# -- parse_stream_line ------------------------------------------------------------------


@pytest.mark.parametrize("line", ["", "   ", "\t"])
def test_blank_lines_are_skipped(line: str) -> None:
    assert _core.parse_stream_line(line) is None


def test_log_lines() -> None:
    out = _core.parse_stream_line('{"stream": "stdout", "data": "hi\\n"}')
    err = _core.parse_stream_line('{"stream": "stderr", "data": "\\u00e9"}')
    assert out == LogLine("stdout", "hi\n")
    assert err == LogLine("stderr", "é")


@pytest.mark.parametrize("exit_code", [None, 0, 137])
def test_command_lines(exit_code: int | None) -> None:
    item = _core.parse_stream_line(json.dumps({"command": command_json(exit_code)}))
    assert isinstance(item, Command)
    assert item.id == "cmd_1" and item.session_id == "sbx_1" and item.args == ["hi"]
    assert item.exit_code == exit_code


def test_error_lines_raise_the_typed_error() -> None:
    line = json.dumps(
        {"stream": "error", "data": {"code": "sandbox_stopped", "message": "it stopped"}}
    )
    with pytest.raises(SandboxStoppedError) as raised:
        _core.parse_stream_line(line)
    assert raised.value.message == "it stopped"
    assert raised.value.code == "sandbox_stopped"


def test_error_lines_with_an_unknown_code_or_no_data_still_raise() -> None:
    unknown = json.dumps({"stream": "error", "data": {"code": "brand_new", "message": "new"}})
    with pytest.raises(EmberError, match="new"):
        _core.parse_stream_line(unknown)
    with pytest.raises(EmberError, match="the stream failed"):
        _core.parse_stream_line('{"stream": "error"}')


# -- tar_gz -------------------------------------------------------------------------------


def test_tar_gz_strips_leading_slashes_and_keeps_modes() -> None:
    data = _core.tar_gz([("/etc/motd", "hello", 0o600), ("rel/x.bin", b"\x00\xff", 0o755)])
    assert gzip.decompress(data)  # a real gzip stream
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        members = {m.name: m for m in tar.getmembers()}
        assert sorted(members) == ["etc/motd", "rel/x.bin"]
        assert members["etc/motd"].mode == 0o600 and members["rel/x.bin"].mode == 0o755
        assert all(m.isfile() for m in members.values())
        motd = tar.extractfile("etc/motd")
        assert motd is not None and motd.read() == b"hello"


# -- driving flows by hand -------------------------------------------------------------


def finish(flow: _core.Flow[Any], response: Any) -> Any:
    """Send the last response; the flow must return, and this gives its value."""
    with pytest.raises(StopIteration) as done:
        flow.send(response)
    return done.value.value


def state(status: str = "running", session_id: str = "sbx_1") -> _core.SandboxState:
    return _core.SandboxState(
        Sandbox.model_validate(sandbox_json("box", session_id)),
        Session.model_validate(session_json(session_id, status)),
    )


def build(session_id: str) -> _core.Call:
    return _core.Call("POST", f"/v2/sandboxes/sessions/{session_id}/fs/read", json={"path": "f"})


def is_resume(step: Any, name: str = "box") -> bool:
    return (
        isinstance(step, _core.Call)
        and (step.method, step.path) == ("GET", f"/v2/sandboxes/{name}")
        and step.params == {"resume": "true"}
    )


def test_with_session_passes_a_success_through() -> None:
    flow = _core.with_session(state(), build)
    assert next(flow) == build("sbx_1")
    answer = httpx.Response(200, content=b"data")
    assert finish(flow, answer) is answer


def test_with_session_resumes_on_410_sandbox_stopped_and_retries_once() -> None:
    current = state()
    flow = _core.with_session(current, build)
    assert next(flow) == build("sbx_1")
    step = flow.send(error(410, "sandbox_stopped"))
    assert is_resume(step)
    assert flow.send(ok(sandbox_response("box", "sbx_2"))) == build("sbx_2")
    answer = httpx.Response(200, content=b"data")
    assert finish(flow, answer) is answer
    assert current.session is not None and current.session.id == "sbx_2"
    assert current.sandbox.current_session_id == "sbx_2"


@pytest.mark.parametrize(
    ("code", "transition"),
    [("sandbox_stopping", "stopping"), ("sandbox_snapshotting", "snapshotting")],
)
def test_with_session_waits_out_422_then_resumes(code: str, transition: str) -> None:
    current = state()
    flow = _core.with_session(current, build)
    assert next(flow) == build("sbx_1")
    poll = _core.Call("GET", "/v2/sandboxes/sessions/sbx_1")
    assert isinstance(flow.send(error(422, code)), _core.Sleep)
    assert flow.send(None) == poll
    # Still in transition: sleep and poll again.
    assert isinstance(flow.send(ok({"session": session_json("sbx_1", transition)})), _core.Sleep)
    assert flow.send(None) == poll
    assert is_resume(flow.send(ok({"session": session_json("sbx_1", "stopped")})))
    assert flow.send(ok(sandbox_response("box", "sbx_2"))) == build("sbx_2")
    answer = httpx.Response(200, content=b"data")
    assert finish(flow, answer) is answer
    assert current.session is not None and current.session.id == "sbx_2"


def test_sleeps_are_positive() -> None:
    flow = _core.with_session(state(), build)
    next(flow)
    sleep = flow.send(error(422, "sandbox_stopping"))
    assert isinstance(sleep, _core.Sleep) and sleep.seconds > 0


@pytest.mark.parametrize(
    "response",
    [
        error(404, "file_not_found"),
        error(404, "sandbox_not_found"),
        error(422, "filesystem_error"),
        error(410, "snapshot_not_found"),
        error(500, "internal_error"),
        httpx.Response(502, text="bad gateway"),
    ],
    ids=lambda r: f"{r.status_code}",
)
def test_with_session_does_not_resume_on_other_errors(response: httpx.Response) -> None:
    current = state()
    flow = _core.with_session(current, build)
    next(flow)
    assert finish(flow, response) is response
    assert current.session is not None and current.session.id == "sbx_1"


def test_with_session_retries_only_once() -> None:
    flow = _core.with_session(state(), build)
    next(flow)
    assert is_resume(flow.send(error(410, "sandbox_stopped")))
    assert flow.send(ok(sandbox_response("box", "sbx_2"))) == build("sbx_2")
    again = error(410, "sandbox_stopped")
    assert finish(flow, again) is again


@pytest.mark.parametrize("status", ["stopped", "failed", "aborted"])
def test_with_session_resumes_first_when_the_session_is_not_running(status: str) -> None:
    current = state(status)
    flow = _core.with_session(current, build)
    assert is_resume(next(flow))
    assert flow.send(ok(sandbox_response("box", "sbx_2"))) == build("sbx_2")


def test_with_session_resumes_first_when_there_is_no_session() -> None:
    current = _core.SandboxState(Sandbox.model_validate(sandbox_json("box", None)), None)
    flow = _core.with_session(current, build)
    assert is_resume(next(flow))
    assert flow.send(ok(sandbox_response("box", "sbx_3"))) == build("sbx_3")


def test_a_failed_resume_raises_the_typed_error() -> None:
    flow = _core.with_session(state(), build)
    next(flow)
    flow.send(error(410, "sandbox_stopped"))
    with pytest.raises(SandboxNotFoundError) as raised:
        flow.send(error(404, "sandbox_not_found", "no sandbox named box"))
    assert raised.value.status == 404


# -- get_or_create_flow -------------------------------------------------------------------


def test_get_or_create_returns_an_existing_sandbox() -> None:
    flow = _core.get_or_create_flow("box", {"timeout": 1000})
    assert is_resume(next(flow))
    body, created = finish(flow, ok(sandbox_response("box")))
    assert isinstance(body, SandboxResponse) and body.sandbox.name == "box"
    assert created is False


def test_get_or_create_creates_on_404() -> None:
    flow = _core.get_or_create_flow("box", {"timeout": 1000, "name": "ignored"})
    next(flow)
    post = flow.send(error(404, "sandbox_not_found"))
    assert post == _core.Call("POST", "/v3/sandboxes", json={"timeout": 1000, "name": "box"})
    body, created = finish(flow, ok(sandbox_response("box")))
    assert body.sandbox.name == "box" and created is True


def test_get_or_create_replaces_a_sandbox_whose_snapshot_expired() -> None:
    flow = _core.get_or_create_flow("box", {})
    next(flow)
    delete = flow.send(error(410, "snapshot_not_found"))
    assert delete == _core.Call("DELETE", "/v2/sandboxes/box")
    post = flow.send(ok(sandbox_response("box")))
    assert post == _core.Call("POST", "/v3/sandboxes", json={"name": "box"})
    _, created = finish(flow, ok(sandbox_response("box")))
    assert created is True


def test_get_or_create_raises_other_errors() -> None:
    flow = _core.get_or_create_flow("box", {})
    next(flow)
    with pytest.raises(UnauthorizedError):
        flow.send(error(401, "unauthorized"))


# -- pages and parse -----------------------------------------------------------------------


def test_pages_returns_items_and_the_next_cursor() -> None:
    call = _core.Call("GET", "/v2/sandboxes/snapshots")
    flow = _core.pages(call, "snapshots")
    assert next(flow) is call
    items, cursor = finish(
        flow, ok({"snapshots": [1, 2], "pagination": {"count": 2, "next": "c2"}})
    )
    assert (items, cursor) == ([1, 2], "c2")
    last = _core.pages(call, "snapshots")
    next(last)
    assert finish(last, ok({"snapshots": [], "pagination": {"count": 0, "next": None}})) == (
        [],
        None,
    )


def test_pages_raises_on_errors() -> None:
    flow = _core.pages(_core.Call("GET", "/v2/sandboxes"), "sandboxes")
    next(flow)
    with pytest.raises(EmberApiError):
        flow.send(error(400, "a_code_from_the_future"))


@pytest.mark.parametrize("check", [_core.check, lambda r: _core.parse(r, SandboxResponse)])
def test_parse_and_check_raise_typed_errors(check: Callable[[httpx.Response], Any]) -> None:
    with pytest.raises(FilesystemError) as raised:
        check(error(422, "filesystem_error", "disk full"))
    assert raised.value.status == 422 and raised.value.message == "disk full"


def test_parse_reads_the_model() -> None:
    parsed = _core.parse(ok(sandbox_response("box", "sbx_7")), SandboxResponse)
    assert parsed.session is not None and parsed.session.id == "sbx_7"


@pytest.mark.parametrize("name", ["snapshots/snap_x", "..", "a b", "", "x" * 129])
def test_names_that_would_read_as_other_paths_are_refused(name: str) -> None:
    from ember.wire.errors import BadRequestError, InvalidNameError

    with pytest.raises(InvalidNameError):
        _core.get_sandbox(name)
    with pytest.raises(BadRequestError):
        _core.snapshot_path(name)
