"""The one table from error class to HTTP status, and the handlers that write error bodies."""

from __future__ import annotations

import logging
import uuid
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ember.wire import errors

log = logging.getLogger("ember.api")

STATUS: dict[type[errors.EmberError], int] = {
    errors.BadRequestError: 400,
    errors.UnauthorizedError: 401,
    errors.ForbiddenError: 403,
    errors.NotFoundError: 404,
    errors.SnapshotGoneError: 410,
    errors.ConflictError: 409,
    errors.SandboxStoppedError: 410,
    errors.SandboxStoppingError: 422,
    errors.SandboxSnapshottingError: 422,
    errors.FilesystemError: 422,
    errors.PayloadTooLargeError: 413,
    errors.NotImplementedYetError: 501,
    errors.RuntimeFailureError: 503,
    errors.InternalError: 500,
}


def status_of(error: errors.EmberError) -> int:
    for cls in type(error).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(error: errors.EmberError) -> JSONResponse:
    return JSONResponse(error.to_json(), status_code=status_of(error))


def _describe_validation(exc: RequestValidationError) -> str:
    parts = []
    for item in exc.errors()[:5]:
        where = ".".join(str(p) for p in item.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {item.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid request"


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.EmberError)
    async def ember_error(_request: Request, exc: errors.EmberError) -> JSONResponse:
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default is 422; the reference keeps 422 for stopping/snapshotting.
        message = _describe_validation(exc)
        if any(
            tuple(e.get("loc", ())) == ("body", "name") and e.get("type") != "extra_forbidden"
            for e in exc.errors()
        ):
            return error_response(errors.InvalidNameError(message))
        return error_response(errors.BadRequestError(message))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "bad_request")
        body: dict[str, Any] = {"error": {"code": code, "message": str(exc.detail)}}
        return JSONResponse(body, status_code=exc.status_code)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        request_id = uuid.uuid4().hex[:12]
        log.error(
            "request %s %s failed (id %s)",
            request.method,
            request.url.path,
            request_id,
            exc_info=exc,
        )
        return error_response(errors.InternalError(f"internal error (request id {request_id})"))
