"""Metadata: projects, tokens, sandboxes, sessions, commands and snapshots.

Only `ember.control` writes here. Imports nothing from wire, control or api.
"""

from . import models
from .db import Database

__all__ = ["Database", "models"]
