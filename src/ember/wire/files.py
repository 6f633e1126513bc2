"""File shapes of Ember's fs extensions (stat, list)."""

from __future__ import annotations

from typing import Any, Literal

from .base import ResponseModel


class FileStat(ResponseModel):
    path: str
    name: str
    type: Literal["file", "directory", "symlink", "other"]
    size: int
    mode: int
    uid: int
    gid: int
    mtime_ms: int
    link_target: str | None = None


class FileStatResponse(ResponseModel):
    stat: FileStat


class FileListResponse(ResponseModel):
    entries: list[FileStat]


def file_stat(raw: dict[str, Any]) -> FileStat:
    """From the agent's stat dictionary (snake_case keys)."""
    return FileStat.model_validate(raw)
