"""Every error leaves the API as `{"error": {"code", "message", "details"}}`, mapped here alone.

FlowForge's exceptions carry a `code` but no HTTP status (they are raised in flow runs and the
CLI too); this module is the one place that knows which status each class means. FastAPI's
request validation becomes a 422 naming the field; anything else is a bug, logged with its
traceback and answered with a 500 that does not leak internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from api.auth import AuthenticationError, PermissionDeniedError
from api.ratelimit import RateLimitedError
from flowforge.core import errors

log = logging.getLogger("flowforge.api")


class UnsupportedMediaTypeError(errors.FlowForgeError):
    """A body of a type the route does not read (415)."""

    code = "unsupported_media_type"


class UnhealthyError(errors.FlowForgeError):
    """A part of the stack is down; the details name each part's state (503)."""

    code = "unhealthy"


#: Each FlowForge error class's status; a subclass takes its nearest listed ancestor's.
STATUS: dict[type[errors.FlowForgeError], int] = {
    errors.SpecError: 422,
    errors.InputError: 422,
    errors.InvalidRequestError: 422,
    errors.NotFoundError: 404,
    errors.ConflictError: 409,
    errors.BadSignatureError: 401,
    errors.PayloadTooLargeError: 413,
    errors.PrefectUnavailableError: 503,
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    RateLimitedError: 429,
    UnsupportedMediaTypeError: 415,
    UnhealthyError: 503,
}


def status_of(exc: errors.FlowForgeError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS:
            return STATUS[cls]
    return 500


def error_response(status: int, code: str, message: str, details: Any = None,
                   headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, headers=headers,
                        content={"error": {"code": code, "message": message, "details": details}})


def headers_of(exc: errors.FlowForgeError) -> dict[str, str]:
    if isinstance(exc, RateLimitedError):
        return {"Retry-After": str(exc.retry_after)}
    if isinstance(exc, AuthenticationError):
        return {"WWW-Authenticate": "Bearer"}
    return {}


def install(app: FastAPI) -> None:
    @app.exception_handler(errors.FlowForgeError)
    async def _flowforge(request: Request, exc: errors.FlowForgeError) -> JSONResponse:
        status = status_of(exc)
        if status == 500:
            log.error("%s on %s %s: %s", exc.code, request.method, request.url.path, exc.message)
        return error_response(status, exc.code, exc.message, exc.details, headers_of(exc))

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"field": ".".join(str(p) for p in err["loc"] if p != "body"),
                    "message": err["msg"]} for err in exc.errors()]
        message = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        return error_response(422, "invalid_request", message, details)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return error_response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(500, "internal_error", "internal error; see the API log")


__all__ = ["STATUS", "UnhealthyError", "UnsupportedMediaTypeError", "error_response", "headers_of",
           "install", "status_of"]
