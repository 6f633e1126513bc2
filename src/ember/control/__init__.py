"""The control plane: lifecycle of sandboxes, sessions, commands and snapshots.

The only writer of the store. Imports store, snapshots, runtime, image and wire;
never the API or FastAPI.
"""

from ember.runtime import AgentUnavailableError as SessionUnavailableError
from ember.runtime import Terminal

from .auth import Principal, TokenVerifier, create_token, ensure_project, has_tokens
from .plane import ControlPlane, StopResult
from .settings import Settings

__all__ = [
    "ControlPlane",
    "Principal",
    "SessionUnavailableError",
    "Settings",
    "StopResult",
    "Terminal",
    "TokenVerifier",
    "create_token",
    "ensure_project",
    "has_tokens",
]
