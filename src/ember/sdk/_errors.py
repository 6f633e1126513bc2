"""The SDK's errors. Server errors are the wire's classes, one per stable code:

    EmberError (ember.wire.errors)       code, message
    ├── every server code, e.g. SandboxNotFoundError, SandboxStoppedError, ...
    ├── EmberApiError                    a code this SDK does not know; keeps code and status
    ├── EmberConnectionError             no server answered (is `ember serve` running?)
    ├── EmberTimeoutError                the server took too long
    └── EmberConfigError                 no URL or token found

Each raised server error carries `.status` (the HTTP status). No httpx
exception reaches users.
"""

from __future__ import annotations

from typing import Any

import httpx

from ember.wire.errors import EmberError, SnapshotGoneError, SnapshotNotFoundError, error_class


class EmberApiError(EmberError):
    """An error code this version of the SDK does not know."""

    def __init__(self, code: str, message: str, status: int) -> None:
        super().__init__(message)
        self.api_code = code
        self.status = status

    def __str__(self) -> str:
        return f"{self.api_code} ({self.status}): {self.message}"


class EmberConnectionError(EmberError):
    pass


class EmberTimeoutError(EmberError):
    pass


class EmberConfigError(EmberError):
    pass


def error_from_response(response: httpx.Response) -> EmberError:
    """The typed error of a non-2xx response."""
    code, message = "error", response.reason_phrase
    try:
        body: Any = response.json()
        code = str(body["error"]["code"])
        message = str(body["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = f"HTTP {response.status_code}: {response.text[:200]}"
    cls = error_class(code)
    if cls is SnapshotNotFoundError and response.status_code == 410:
        cls = SnapshotGoneError  # the code is shared; the 410 says it was the sandbox's snapshot
    error: EmberError = (
        cls(message) if cls is not None else EmberApiError(code, message, response.status_code)
    )
    error.status = response.status_code
    return error


def transport_error(exc: httpx.TransportError, url: str) -> EmberError:
    if isinstance(exc, httpx.TimeoutException):
        return EmberTimeoutError(f"{url}: the server did not answer in time ({exc})")
    return EmberConnectionError(
        f"cannot reach the Ember server at {url} ({exc}); is `ember serve` running?"
    )
