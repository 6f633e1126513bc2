"""Helpers shared by the API input and listing suites (the lifecycle helpers stay in
`test_api_lifecycle`, which these suites import)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import httpx

from ..conftest import Emberd


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, str]:
    """The response is the error `status` with body `{"error": {"code", "message"}}`."""
    request = response.request
    where = f"{request.method} {request.url} -> {response.status_code} {response.text[:500]}"
    assert response.status_code < 500, f"server error for a client's request: {where}"
    assert response.status_code == status, where
    assert response.headers.get("content-type", "").startswith("application/json"), where
    body = response.json()
    assert isinstance(body, dict) and set(body) == {"error"}, where
    error = body["error"]
    assert isinstance(error, dict) and set(error) == {"code", "message"}, where
    assert isinstance(error["code"], str) and error["code"], where
    assert isinstance(error["message"], str) and error["message"], where
    if code is not None:
        assert error["code"] == code, where
    return error


def check_error_body(response: httpx.Response | Any) -> None:
    """Any 4xx: the JSON error shape, whatever the code."""
    body = response.json()
    assert set(body) == {"error"}, response.text
    assert set(body["error"]) == {"code", "message"}, response.text
    assert isinstance(body["error"]["code"], str) and body["error"]["code"], response.text
    assert isinstance(body["error"]["message"], str), response.text


def pages(api: httpx.Client, path: str, key: str, **params: Any) -> list[list[dict[str, Any]]]:
    """Every page of a list endpoint, following `pagination.next` until it is null."""
    found: list[list[dict[str, Any]]] = []
    cursor = None
    for _ in range(1000):
        query = dict(params, cursor=cursor) if cursor else dict(params)
        response = api.get(path, params=query)
        assert response.status_code == 200, response.text
        body = response.json()
        items = body[key]
        assert body["pagination"]["count"] == len(items), body["pagination"]
        found.append(items)
        cursor = body["pagination"]["next"]
        if cursor is None:
            return found
        assert isinstance(cursor, str) and cursor
    raise AssertionError(f"{path} never stopped paginating")


def sandbox_names(api: httpx.Client) -> list[str]:
    names = [
        s["name"] for page in pages(api, "/v2/sandboxes", "sandboxes", limit=100) for s in page
    ]
    assert len(names) == len(set(names)), f"a sandbox is listed twice: {names}"
    return names


def delete_quietly(emberd: Emberd, *names: str) -> None:
    """Best-effort cleanup with a fresh connection (a 500 may have closed the old one)."""
    with emberd.client() as client:
        for name in names:
            with contextlib.suppress(httpx.HTTPError):
                client.delete(f"/v2/sandboxes/{name}", params={"deleteOrphanSnapshots": "true"})


@contextlib.contextmanager
def creates_no_sandbox(emberd: Emberd, name: str | None = None) -> Iterator[None]:
    """The block must leave the project's sandboxes as they were.

    Whatever the block did create anyway is deleted afterwards, so that a
    failing server does not leak broken sandboxes into later tests.
    """
    with emberd.client() as client:
        before = set(sandbox_names(client))
    try:
        yield
        with emberd.client() as client:
            after = set(sandbox_names(client))
            assert after == before, f"sandboxes appeared: {sorted(after - before)}"
            if name is not None:
                assert_error(client.get(f"/v2/sandboxes/{name}"), 404, "sandbox_not_found")
    finally:
        leaked: set[str] = set()
        with contextlib.suppress(Exception), emberd.client() as client:
            leaked = set(sandbox_names(client)) - before
        delete_quietly(emberd, *leaked, *([name] if name else []))
