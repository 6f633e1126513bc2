"""Durations on the command line: `30s`, `5m`, `2h`, `1d`, `250ms`, or `none`."""

from __future__ import annotations

import re

import typer

UNITS_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION = re.compile(r"(\d+)(ms|s|m|h|d)?")


def parse_ms(text: str, *, allow_none: bool = False) -> int:
    """Milliseconds; a bare number is seconds. `none` is 0 where allowed."""
    if allow_none and text in ("none", "0"):
        return 0
    match = _DURATION.fullmatch(text.strip())
    if not match:
        raise typer.BadParameter(f"{text!r} is not a duration like 30s, 5m, 2h or 1d")
    return int(match.group(1)) * UNITS_MS[match.group(2) or "s"]


def human(ms: int | None) -> str:
    if ms is None:
        return "-"
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"
