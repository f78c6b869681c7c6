"""Every error leaves the API as `{"error": {"code", "message", "details"}}`.

FlowForge errors carry their own status; FastAPI's request validation becomes a 422 naming the
field; anything else is a bug, logged with its traceback and answered with a 500 that does not
leak internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from flowforge.errors import FlowForgeError

log = logging.getLogger("flowforge.api")


def error_response(status: int, code: str, message: str, details: Any = None) -> JSONResponse:
    return JSONResponse(status_code=status,
                        content={"error": {"code": code, "message": message, "details": details}})


def install(app: FastAPI) -> None:
    @app.exception_handler(FlowForgeError)
    async def _flowforge(request: Request, exc: FlowForgeError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details)

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
