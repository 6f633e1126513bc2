"""How the CLI prints: rich tables and messages for people, JSON for scripts.

Messages never interpret rich markup in what they show (a sandbox name, a path, a
sandbox's link target): `[/x]` would otherwise vanish or crash the command.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.table import Table
from rich.text import Text

console = Console(stderr=True, highlight=False)
stdout = Console(highlight=False)


def when(ms: int | None) -> str:
    if not ms:
        return "-"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def shown(value: object) -> str:
    """`value` as text safe for a terminal: control characters (escape sequences) quoted."""
    text = str(value)
    return text if text.isprintable() else repr(text)


def print_json(value: Any) -> None:
    if isinstance(value, BaseModel):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if isinstance(v, BaseModel) else v for v in value]
    sys.stdout.write(json.dumps(value, indent=2) + "\n")


def print_table(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A table; piped, it is as wide as it needs, so ids are never cut or wrapped."""
    table = Table(box=None, header_style="bold")
    for column in columns:
        table.add_column(column, no_wrap=not stdout.is_terminal)
    for row in rows:
        table.add_row(*(Text("-" if v is None else shown(v)) for v in row))
    if stdout.is_terminal:
        stdout.print(table)
        return
    wide = stdout.options.update_width(1_000_000)
    width = max(stdout.width, stdout.measure(table, options=wide).maximum)
    Console(file=sys.stdout, width=width, highlight=False).print(table)


def note(message: str, style: str | None = None) -> None:
    """A line for people on stderr, shown as is."""
    console.print(Text(message, style=style or ""), soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    console.print(Text.assemble(("error:", "red"), " ", message), soft_wrap=True)
    raise typer.Exit(code)
