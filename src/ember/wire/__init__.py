"""Every JSON shape of the HTTP API, shared by the server and the SDK.

Pydantic and the standard library only: no I/O, nothing from server packages.
"""

from . import command, common, errors, network, sandbox, session, snapshot
from .errors import EmberError

__all__ = ["EmberError", "command", "common", "errors", "network", "sandbox", "session", "snapshot"]
