"""Opaque keyset cursors: base64url of the last item's sort key and id."""

from __future__ import annotations

import base64
import json
from typing import Any, TypeVar

from sqlalchemy import Select, and_, or_

from ember.wire.errors import BadRequestError, InvalidCursorError

SelectT = TypeVar("SelectT", bound=Select[*tuple[Any, ...]])

MAX_LIMIT = 100
DEFAULT_LIMIT = 50


def encode_cursor(sort_value: Any, item_id: str) -> str:
    raw = json.dumps([sort_value, item_id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Any, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        value, item_id = json.loads(raw)
    except (ValueError, TypeError) as exc:
        raise InvalidCursorError(f"cursor {cursor[:40]!r} is not one this server issued") from exc
    # Sort keys are epoch-ms integers or names; anything else was not issued here.
    fits = isinstance(value, str) or (
        isinstance(value, int) and not isinstance(value, bool) and -(2**63) <= value < 2**63
    )
    if not isinstance(item_id, str) or not fits:
        raise InvalidCursorError(f"cursor {cursor[:40]!r} is not one this server issued")
    return value, item_id


def check_limit(limit: int | None) -> int:
    if limit is None:
        return DEFAULT_LIMIT
    if not 1 <= limit <= MAX_LIMIT:
        raise BadRequestError(f"limit must be between 1 and {MAX_LIMIT}, got {limit}")
    return limit


def check_order(sort_order: str | None) -> str:
    order = (sort_order or "desc").lower()
    if order not in ("asc", "desc"):
        raise BadRequestError("sortOrder must be 'asc' or 'desc'")
    return order


def keyset_by_created(
    stmt: SelectT, table: Any, after: tuple[Any, str] | None, order: str
) -> SelectT:
    """Order by (created_at, id) and continue after the cursor's item."""
    if after is not None:
        value, last_id = after
        if order == "asc":
            stmt = stmt.where(
                or_(table.created_at > value, and_(table.created_at == value, table.id > last_id))
            )
        else:
            stmt = stmt.where(
                or_(table.created_at < value, and_(table.created_at == value, table.id < last_id))
            )
    if order == "asc":
        return stmt.order_by(table.created_at.asc(), table.id.asc())
    return stmt.order_by(table.created_at.desc(), table.id.desc())
