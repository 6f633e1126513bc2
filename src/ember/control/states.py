"""Session states and the checks session-bound calls make.

Beyond the reference's states, a microVM session may be `paused` (its memory
saved, no processes; `resume` brings it back as it was), passing through
`pausing` and `resuming`. On the wire these read as the reference's states
(`WIRE_STATUS`) plus `paused: true`, so the official clients, which accept
only their own states, see a stopped session and resume it as usual.
"""

from __future__ import annotations

from ember.store import models
from ember.wire import errors

ACTIVE = ("pending", "running", "stopping", "snapshotting", "pausing", "resuming")
PAUSED = "paused"
HELD = (*ACTIVE, PAUSED)  # the runtime holds the session's disk (and its layers)
ENDED = ("stopped", "failed", "aborted")
WIRE_STATUS = {"pausing": "stopping", "paused": "stopped", "resuming": "pending"}


def raise_unless_running(session: models.Session) -> None:
    """The reference's answers: 422 while stopping or snapshotting, 410 once ended
    (and while paused: clients resume, which for a paused session restores it)."""
    if session.status in ("stopping", "pausing"):
        raise errors.SandboxStoppingError(f"the session is {session.status}")
    if session.status == "snapshotting":
        raise errors.SandboxSnapshottingError("the session is being snapshotted")
    if session.status != "running":
        raise errors.SandboxStoppedError(
            f"the session is {session.status}; resume the sandbox to continue"
        )
