"""Agent errors translated into the API's errors, at the control plane's boundary."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from ember.runtime import AgentError, AgentUnavailableError
from ember.wire import errors

if TYPE_CHECKING:
    from ember.store import models

    from .plane import ControlPlane

_BY_CODE: dict[str, type[errors.EmberError]] = {
    "not_found": errors.FileNotFoundError_,
    "bad_request": errors.BadRequestError,
    "exists": errors.ConflictError,
    "unsafe_path": errors.InvalidPathError,
    "unsupported_entry": errors.BadRequestError,
    "not_a_directory": errors.FilesystemError,
    "is_a_directory": errors.FilesystemError,
    "permission_denied": errors.FilesystemError,
    "io_error": errors.FilesystemError,
}


@contextmanager
def agent_errors(
    plane: ControlPlane,
    session: models.Session,
    *,
    not_found: type[errors.EmberError] | None = None,
) -> Iterator[None]:
    """Map agent failures; an agent that stopped answering may mean the session died.

    The session is checked in the background and stopped (keeping its
    filesystem) if its agent no longer answers; the caller gets 422
    `sandbox_stopping`, so clients wait and resume.
    """
    try:
        yield
    except AgentError as exc:
        cls = (
            not_found
            if exc.code == "not_found" and not_found
            else _BY_CODE.get(exc.code, errors.FilesystemError)
        )
        raise cls(exc.message) from exc
    except AgentUnavailableError as exc:
        plane.spawn(plane.stop_if_dead(session.id), f"check-{session.id}")
        raise errors.SandboxStoppingError(
            f"the session stopped answering ({exc}); it is stopped if it does not recover"
        ) from exc
