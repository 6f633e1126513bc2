"""The control plane: lifecycle of sandboxes, sessions, commands and snapshots.

The only writer of the store. Imports store, snapshots, runtime, image and wire;
never the API or FastAPI.
"""

from .auth import Principal, TokenVerifier, create_token, ensure_project, has_tokens
from .plane import ControlPlane, StopResult
from .settings import Settings

__all__ = [
    "ControlPlane",
    "Principal",
    "Settings",
    "StopResult",
    "TokenVerifier",
    "create_token",
    "ensure_project",
    "has_tokens",
]
