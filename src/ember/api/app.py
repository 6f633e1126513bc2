"""The emberd ASGI application."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from ember import __version__
from ember.control import ControlPlane

from . import errors, sandboxes, sessions, snapshots, terminals
from .ports import PortRouter


def create_app(plane: ControlPlane) -> FastAPI:
    """The API over a control plane; the app's lifespan starts and stops the plane."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        await plane.start()
        try:
            yield
        finally:
            await plane.close()

    app = FastAPI(
        title="Ember",
        version=__version__,
        description="Self-hosted sandboxes with a Vercel Sandbox compatible API.",
        lifespan=lifespan,
    )
    app.state.plane = plane
    errors.install(app)
    # Static paths first: /v2/sandboxes/sessions must not be read as a sandbox name.
    app.include_router(sessions.router)
    app.include_router(snapshots.router)
    app.include_router(terminals.router)
    app.include_router(sandboxes.router)

    # `/health` too: the official clients probe https://<terminal host>/health before
    # opening an interactive terminal's WebSocket.
    @app.get("/health", include_in_schema=False)
    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok", "version": __version__}

    # Outermost: requests for a sandbox's exposed port never reach the API.
    app.add_middleware(PortRouter, plane=plane, domain=plane.settings.public_domain)
    return app
