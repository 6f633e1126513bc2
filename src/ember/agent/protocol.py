"""Framing and error codes of the agent protocol (docs/agent-protocol.md).

Shared by the agent and the host's client; standard library only.
"""

from __future__ import annotations

import json
import struct

TYPE_CHECKING = False  # like typing.TYPE_CHECKING, without importing typing (3 ms)

if TYPE_CHECKING:
    import socket
    from typing import Any

PROTOCOL_VERSION = 1
MAX_FRAME_BYTES = 4 * 1024 * 1024
CHUNK_BYTES = 256 * 1024

JSON = b"J"
STDOUT = b"1"
STDERR = b"2"
DATA = b"D"
END = b"E"
FRAME_TYPES = frozenset((JSON, STDOUT, STDERR, DATA, END))

_HEADER = struct.Struct(">cI")

# Stable error codes; see the table in docs/agent-protocol.md.
BAD_REQUEST = "bad_request"
NOT_FOUND = "not_found"
EXISTS = "exists"
NOT_A_DIRECTORY = "not_a_directory"
IS_A_DIRECTORY = "is_a_directory"
UNSAFE_PATH = "unsafe_path"
UNSUPPORTED_ENTRY = "unsupported_entry"
PERMISSION_DENIED = "permission_denied"
IO_ERROR = "io_error"


class ProtocolError(Exception):
    """The peer broke the framing rules or closed mid-frame."""


class AgentError(Exception):
    """An operation failed with a stable code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def to_json(self) -> dict[str, Any]:
        return {"ok": False, "error": {"code": self.code, "message": self.message}}


def encode_frame(kind: bytes, payload: bytes = b"") -> bytes:
    if len(payload) > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {len(payload)} bytes exceeds {MAX_FRAME_BYTES}")
    return _HEADER.pack(kind, len(payload)) + payload


def encode_json(message: dict[str, Any]) -> bytes:
    return encode_frame(JSON, json.dumps(message, separators=(",", ":")).encode())


def decode_header(header: bytes) -> tuple[bytes, int]:
    kind, length = _HEADER.unpack(header)
    if kind not in FRAME_TYPES:
        raise ProtocolError(f"unknown frame type {kind!r}")
    if length > MAX_FRAME_BYTES:
        raise ProtocolError(f"frame of {length} bytes exceeds {MAX_FRAME_BYTES}")
    return kind, length


def decode_json(payload: bytes) -> dict[str, Any]:
    try:
        message = json.loads(payload)
    except ValueError as exc:
        raise ProtocolError(f"frame is not JSON: {exc}") from exc
    if not isinstance(message, dict):
        raise ProtocolError("JSON frame is not an object")
    return message


HEADER_BYTES = _HEADER.size


class FramedSocket:
    """Blocking frame reader/writer over a connected socket (used by the agent)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._file = sock.makefile("rb", buffering=CHUNK_BYTES)

    def _read_exact(self, n: int) -> bytes:
        data: bytes | None = self._file.read(n)
        if data is None or len(data) != n:
            raise ProtocolError("connection closed mid-frame" if data else "connection closed")
        return data

    def read_frame(self) -> tuple[bytes, bytes]:
        kind, length = decode_header(self._read_exact(HEADER_BYTES))
        return kind, self._read_exact(length) if length else b""

    def read_json(self) -> dict[str, Any]:
        kind, payload = self.read_frame()
        if kind != JSON:
            raise ProtocolError(f"expected a JSON frame, got {kind!r}")
        return decode_json(payload)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def send_json(self, message: dict[str, Any]) -> None:
        self.sock.sendall(encode_json(message))

    def close(self) -> None:
        self._file.close()
        self.sock.close()
