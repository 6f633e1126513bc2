"""Command shapes and the NDJSON stream lines (reference §9.2, §9.3)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from .base import RequestModel, ResponseModel
from .common import Env, PositiveMs


class Command(ResponseModel):
    _nullable = frozenset({"exitCode"})
    id: str
    name: str
    args: list[str]
    cwd: str
    session_id: str
    exit_code: int | None
    duration_ms: int | None = None
    started_at: int
    sudo: bool = False  # Ember extension


class CommandResponse(ResponseModel):
    command: Command


class CommandList(ResponseModel):
    commands: list[Command]


class RunCommandRequest(RequestModel):
    command: Annotated[str, Field(min_length=1, max_length=4096)]
    args: list[str] = Field(default_factory=list)
    cwd: str | None = None
    env: Env = Field(default_factory=dict)
    sudo: bool = False
    wait: bool = False
    logs: bool = False
    timeout: PositiveMs | None = None
    stdin: bool = False  # Ember's name: keep stdin open for POST .../stdin
    attach_stdin: bool = False  # the official Python SDK's name for the same


class StdinRequest(RequestModel):
    """The official Python SDK's stdin chunk: base64 `data` at byte `offset`, maybe `close`."""

    data: str = ""
    offset: Annotated[int, Field(ge=0)] | None = None
    close: bool = False


class StdinResponse(ResponseModel):
    bytes_written: int


class KillRequest(RequestModel):
    signal: Annotated[int, Field(ge=1, le=64)] = 15


def log_line(stream: str, data: str) -> dict[str, Any]:
    return {"stream": stream, "data": data}
