"""The HTTP API: routes, auth, error mapping, OpenAPI. The only FastAPI user.

Imports control and wire only.
"""

from .app import create_app

__all__ = ["create_app"]
