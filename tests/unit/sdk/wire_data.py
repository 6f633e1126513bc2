"""Wire JSON for the SDK's unit tests, as emberd sends it."""

from __future__ import annotations

from typing import Any

import httpx


def session_json(session_id: str = "sbx_1", status: str = "running") -> dict[str, Any]:
    return {
        "id": session_id,
        "memory": 2048,
        "vcpus": 1,
        "region": "local",
        "timeout": 300_000,
        "status": status,
        "requestedAt": 1,
        "createdAt": 1,
        "cwd": "/vercel/sandbox",
        "updatedAt": 1,
    }


def sandbox_json(
    name: str = "box", session_id: str | None = "sbx_1", status: str = "running"
) -> dict[str, Any]:
    return {
        "name": name,
        "persistent": True,
        "createdAt": 1,
        "updatedAt": 1,
        "currentSessionId": session_id,
        "status": status,
    }


def sandbox_response(
    name: str = "box", session_id: str = "sbx_1", status: str = "running"
) -> dict[str, Any]:
    return {
        "sandbox": sandbox_json(name, session_id, status),
        "session": session_json(session_id, status),
        "routes": [],
    }


def command_json(exit_code: int | None = None) -> dict[str, Any]:
    return {
        "id": "cmd_1",
        "name": "echo",
        "args": ["hi"],
        "cwd": "/vercel/sandbox",
        "sessionId": "sbx_1",
        "exitCode": exit_code,
        "startedAt": 5,
    }


def error(status: int, code: str, message: str = "it failed") -> httpx.Response:
    return httpx.Response(status, json={"error": {"code": code, "message": message}})


def ok(body: Any) -> httpx.Response:
    return httpx.Response(200, json=body)
