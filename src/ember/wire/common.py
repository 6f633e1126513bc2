"""Shapes and checks shared by several resources."""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator, Field

from .base import ResponseModel

NAME_PATTERN = re.compile(r"[a-zA-Z0-9_-]{1,128}")
MAX_TAGS = 5
MAX_PORTS = 15
DAY_MS = 24 * 3600 * 1000


def check_name(value: str) -> str:
    if not NAME_PATTERN.fullmatch(value):
        raise ValueError(f"name {value!r} must be 1-128 characters of letters, digits, '_' and '-'")
    return value


def check_tags(value: dict[str, str]) -> dict[str, str]:
    if len(value) > MAX_TAGS:
        raise ValueError(f"at most {MAX_TAGS} tags are allowed, got {len(value)}")
    for key, tag in value.items():
        if not key or len(key) > 128 or len(tag) > 256 or ":" in key:
            raise ValueError(
                f"tag {key!r}: keys are 1-128 characters without ':', values at most 256"
            )
    return value


def check_ports(value: list[int]) -> list[int]:
    if len(value) > MAX_PORTS:
        raise ValueError(f"at most {MAX_PORTS} ports are allowed, got {len(value)}")
    if len(set(value)) != len(value):
        raise ValueError("ports must not repeat")
    for port in value:
        if not 1 <= port <= 65535:
            raise ValueError(f"port {port} is outside 1-65535")
    return value


def check_env(value: dict[str, str]) -> dict[str, str]:
    for key, item in value.items():
        if not key or "=" in key or "\0" in key or "\0" in item:
            raise ValueError(
                f"environment variable {key!r}: names need no '=' or NUL, values no NUL"
            )
    return value


def check_snapshot_expiration(value: int | None) -> int | None:
    if value is not None and value != 0 and not DAY_MS <= value <= 3650 * DAY_MS:
        raise ValueError("snapshotExpiration is 0 (never) or between 1 day and 10 years, in ms")
    return value


Name = Annotated[str, AfterValidator(check_name)]
Tags = Annotated[dict[str, str], AfterValidator(check_tags)]
Ports = Annotated[list[int], AfterValidator(check_ports)]
Env = Annotated[dict[str, str], AfterValidator(check_env)]
SnapshotExpiration = Annotated[int | None, AfterValidator(check_snapshot_expiration)]
PositiveMs = Annotated[int, Field(gt=0, le=10 * 365 * DAY_MS)]


class Pagination(ResponseModel):
    _nullable = frozenset({"next"})
    count: int
    next: str | None = None


class Route(ResponseModel):
    url: str
    subdomain: str
    port: int
