"""`ember.sdk._errors`: HTTP responses and transport failures to typed errors."""

from __future__ import annotations

import httpx
import pytest

from ember.sdk import EmberApiError, EmberConnectionError, EmberTimeoutError
from ember.sdk._errors import error_from_response, transport_error
from ember.wire.errors import (
    EmberError,
    InvalidNameError,
    NotFoundError,
    SandboxNotFoundError,
    SandboxStoppedError,
    SandboxStoppingError,
    SnapshotGoneError,
    SnapshotNotFoundError,
    error_class,
)


@pytest.mark.parametrize(
    ("status", "code", "cls"),
    [
        (404, "sandbox_not_found", SandboxNotFoundError),
        (400, "invalid_name", InvalidNameError),
        (410, "sandbox_stopped", SandboxStoppedError),
        (422, "sandbox_stopping", SandboxStoppingError),
    ],
)
def test_known_codes_become_the_wire_class(status: int, code: str, cls: type[EmberError]) -> None:
    response = httpx.Response(status, json={"error": {"code": code, "message": "details here"}})
    error = error_from_response(response)
    assert type(error) is cls
    assert error.code == code
    assert error.status == status
    assert error.message == "details here"
    assert str(error) == "details here"


def test_known_codes_keep_the_hierarchy() -> None:
    response = httpx.Response(404, json={"error": {"code": "sandbox_not_found", "message": "m"}})
    assert isinstance(error_from_response(response), NotFoundError)


def test_a_gone_snapshot_is_told_apart_by_its_410() -> None:
    body = {"error": {"code": "snapshot_not_found", "message": "expired"}}
    gone = error_from_response(httpx.Response(410, json=body))
    missing = error_from_response(httpx.Response(404, json=body))
    assert type(gone) is SnapshotGoneError and gone.status == 410
    assert type(missing) is SnapshotNotFoundError and missing.status == 404
    assert isinstance(gone, SnapshotNotFoundError)  # catching the broader class still works


def test_an_unknown_code_keeps_code_and_status() -> None:
    assert error_class("teapot_overflow") is None
    response = httpx.Response(418, json={"error": {"code": "teapot_overflow", "message": "full"}})
    error = error_from_response(response)
    assert type(error) is EmberApiError
    assert isinstance(error, EmberError)
    assert error.api_code == "teapot_overflow"
    assert error.status == 418
    assert error.message == "full"
    assert str(error) == "teapot_overflow (418): full"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(502, text="<html>Bad Gateway</html>"),
        httpx.Response(500, json={"detail": "not our shape"}),
        httpx.Response(500, json={"error": "a string"}),
        httpx.Response(503, json=["a", "list"]),
        httpx.Response(500, content=b""),
    ],
    ids=["html", "other-object", "string-error", "list", "empty"],
)
def test_bodies_without_the_error_shape(response: httpx.Response) -> None:
    error = error_from_response(response)
    assert type(error) is EmberApiError
    assert error.status == response.status_code
    assert error.api_code == "error"
    assert f"HTTP {response.status_code}" in error.message
    assert response.text[:50] in error.message


def test_long_bodies_are_cut() -> None:
    error = error_from_response(httpx.Response(500, text="x" * 10_000))
    assert len(error.message) < 300


def test_transport_failures() -> None:
    request = httpx.Request("GET", "http://127.0.0.1:1/v2/sandboxes")
    refused = transport_error(httpx.ConnectError("refused", request=request), "http://127.0.0.1:1")
    assert isinstance(refused, EmberConnectionError)
    assert "http://127.0.0.1:1" in str(refused) and "ember serve" in str(refused)
    slow = transport_error(httpx.ReadTimeout("slow", request=request), "http://127.0.0.1:1")
    assert isinstance(slow, EmberTimeoutError)
    assert "http://127.0.0.1:1" in str(slow)
