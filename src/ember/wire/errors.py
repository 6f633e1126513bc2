"""Ember's error tree: one root, one subclass per stable code.

    EmberError                      code, message
    ├── BadRequestError             bad_request (and the specific 400s below)
    │   ├── InvalidNameError        invalid_name
    │   ├── InvalidPathError        invalid_path
    │   ├── InvalidCursorError      invalid_cursor
    │   ├── CommandStdinUnavailableError  command_stdin_unavailable
    │   └── UnsupportedByRuntimeError  unsupported_by_runtime (pausing a container, ...)
    ├── UnauthorizedError           unauthorized
    ├── ForbiddenError              forbidden
    ├── NotFoundError               not_found
    │   ├── SandboxNotFoundError    sandbox_not_found
    │   ├── SessionNotFoundError    session_not_found
    │   ├── CommandNotFoundError    command_not_found
    │   ├── FileNotFoundError_      file_not_found
    │   └── SnapshotNotFoundError   snapshot_not_found
    │       └── SnapshotGoneError   snapshot_not_found, as a 410: a sandbox's snapshot expired
    ├── ConflictError               conflict
    │   └── SandboxExistsError      sandbox_already_exists
    ├── SandboxStoppedError         sandbox_stopped (410)
    ├── SandboxStoppingError        sandbox_stopping (422)
    ├── SandboxSnapshottingError    sandbox_snapshotting (422)
    ├── FilesystemError             filesystem_error (disk full, wrong kind of file)
    ├── NotImplementedYetError      not_implemented (501)
    ├── PayloadTooLargeError        payload_too_large
    ├── RuntimeFailureError         runtime_error (a session could not be started or reached)
    └── InternalError               internal_error

Codes are public API: add, never rename or reuse. HTTP statuses live in
`ember.api.errors`, not here.
"""

from __future__ import annotations

from typing import ClassVar

_CODES: dict[str, type[EmberError]] = {}


class EmberError(Exception):
    code: ClassVar[str] = "error"
    status: int | None = None  # the HTTP status, once an error has crossed the wire

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __init_subclass__(cls, **kwargs: object) -> None:
        super().__init_subclass__(**kwargs)
        if "code" in cls.__dict__:
            if cls.code in _CODES:
                raise TypeError(
                    f"error code {cls.code!r} is already used by {_CODES[cls.code].__name__}"
                )
            _CODES[cls.code] = cls

    def to_json(self) -> dict[str, dict[str, str]]:
        return {"error": {"code": self.code, "message": self.message}}


def error_class(code: str) -> type[EmberError] | None:
    return _CODES.get(code)


def all_error_classes() -> list[type[EmberError]]:
    return list(_CODES.values())


class BadRequestError(EmberError):
    code = "bad_request"


class InvalidNameError(BadRequestError):
    code = "invalid_name"


class InvalidPathError(BadRequestError):
    code = "invalid_path"


class InvalidCursorError(BadRequestError):
    code = "invalid_cursor"


class UnauthorizedError(EmberError):
    code = "unauthorized"


class ForbiddenError(EmberError):
    code = "forbidden"


class NotFoundError(EmberError):
    code = "not_found"


class SandboxNotFoundError(NotFoundError):
    code = "sandbox_not_found"


class SessionNotFoundError(NotFoundError):
    code = "session_not_found"


class CommandNotFoundError(NotFoundError):
    code = "command_not_found"


class FileNotFoundError_(NotFoundError):  # the builtin name is taken
    code = "file_not_found"


class SnapshotNotFoundError(NotFoundError):
    code = "snapshot_not_found"


class SnapshotGoneError(SnapshotNotFoundError):
    """A sandbox's snapshot expired or was deleted: 410 with code snapshot_not_found."""


class ConflictError(EmberError):
    code = "conflict"


class SandboxExistsError(ConflictError):
    code = "sandbox_already_exists"


class SandboxStoppedError(EmberError):
    code = "sandbox_stopped"


class SandboxStoppingError(EmberError):
    code = "sandbox_stopping"


class SandboxSnapshottingError(EmberError):
    code = "sandbox_snapshotting"


class FilesystemError(EmberError):
    """The sandbox's filesystem refused an operation (disk full, wrong file type, ...)."""

    code = "filesystem_error"


class CommandStdinUnavailableError(BadRequestError):
    """The command was started without stdin, or its stdin is closed."""

    code = "command_stdin_unavailable"


class UnsupportedByRuntimeError(BadRequestError):
    """The session's runtime cannot do that: pause and fork with memory are the microVM's."""

    code = "unsupported_by_runtime"


class NotImplementedYetError(EmberError):
    code = "not_implemented"


class PayloadTooLargeError(EmberError):
    code = "payload_too_large"


class RuntimeFailureError(EmberError):
    code = "runtime_error"


class InternalError(EmberError):
    code = "internal_error"
