"""What a failed session start raises: both runtimes report it the same way."""

from __future__ import annotations

from ember.network import NetworkError

from . import proc
from .agent_client import AgentUnavailableError
from .base import SessionStartError

# A tool failed, a file or device did, the agent never answered, or the network
# could not be set up; anything else is a bug or a cancellation and goes on as is.
START_FAILURES = (proc.ProcessError, OSError, AgentUnavailableError, NetworkError)


def start_error(exc: BaseException, what: str) -> SessionStartError | None:
    """The error a start that raised `exc` reports, if `exc` is a start failure."""
    if isinstance(exc, START_FAILURES):
        return SessionStartError(f"{what} failed to start: {exc}")
    return None
