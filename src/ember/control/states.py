"""Session states and the checks session-bound calls make."""

from __future__ import annotations

from ember.store import models
from ember.wire import errors

ACTIVE = ("pending", "running", "stopping", "snapshotting")
ENDED = ("stopped", "failed", "aborted")


def raise_unless_running(session: models.Session) -> None:
    """The reference's answers: 422 while stopping or snapshotting, 410 once ended."""
    if session.status == "stopping":
        raise errors.SandboxStoppingError("the session is stopping")
    if session.status == "snapshotting":
        raise errors.SandboxSnapshottingError("the session is being snapshotted")
    if session.status != "running":
        raise errors.SandboxStoppedError(
            f"the session is {session.status}; resume the sandbox to continue"
        )
