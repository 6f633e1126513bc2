"""NDJSON responses: one JSON object per line, content type exactly application/x-ndjson."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from fastapi.responses import StreamingResponse

MEDIA_TYPE = "application/x-ndjson"


def ndjson_response(lines: AsyncIterator[dict[str, Any]]) -> StreamingResponse:
    async def encode() -> AsyncIterator[bytes]:
        async for line in lines:
            yield json.dumps(line, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"

    return StreamingResponse(encode(), media_type=MEDIA_TYPE, headers={"cache-control": "no-store"})
