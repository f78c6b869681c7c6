"""What every request passes through, outermost first: its id, the body limit, the key, audit.

Pure ASGI middleware (no `BaseHTTPMiddleware`): a request body is never read whole here, so a
body over the limit is refused as it streams in, before a route could buffer it.
"""

from __future__ import annotations

import contextvars
import json
import logging
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

log = logging.getLogger("flowforge.api")

#: What the route learnt about the request, for its audit row (`note`): set by the audit
#: middleware for each request, filled by services.
_AUDIT: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "flowforge_audit", default=None)
#: Paths anyone may call: liveness, webhook deliveries (signed instead) and the API's docs.
PUBLIC_EXACT = frozenset({"/healthz", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"})
PUBLIC_PREFIXES = ("/hooks/",)
MUTATING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def note(**fields: Any) -> None:
    """Tell the request's audit row what it acted on (`namespace`, `target`)."""
    current = _AUDIT.get()
    if current is not None:
        current.update({k: v for k, v in fields.items() if v is not None})


def is_public(path: str) -> bool:
    return path in PUBLIC_EXACT or path.startswith(PUBLIC_PREFIXES)


async def _json(send: Send, status: int, code: str, message: str, details: Any = None,
                headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = json.dumps({"error": {"code": code, "message": message, "details": details}}).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class RequestId:
    """Every request gets an id (`X-Request-Id`, kept when the caller sent a sane one)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"x-request-id", b"").decode("latin-1")
        request_id = given if 0 < len(given) <= 64 and given.isprintable() else secrets.token_hex(8)
        scope.setdefault("state", {})["request_id"] = request_id

        async def with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        await self.app(scope, receive, with_id)


class BodyLimit:
    """413 for a body over `limit` bytes: by its Content-Length at once, else as it streams."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._refuse(send)
            return
        seen = 0
        started = exceeded = refused = False

        async def counting() -> Message:
            nonlocal seen, exceeded
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    exceeded = True
                    raise _TooLarge
            return message

        async def tracking(message: Message) -> None:
            nonlocal started, refused
            if exceeded:
                # FastAPI turns any error while it parses a body into its own 400: whatever
                # the app answers once the body was too large, the answer is the 413.
                if not refused and not started:
                    refused = True
                    await self._refuse(send)
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting, tracking)
        except _TooLarge:
            if not started and not refused:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await _json(send, 413, "payload_too_large",
                    f"the request body is larger than {self.limit} bytes "
                    "(FLOWFORGE_MAX_BODY_BYTES)", {"limit": self.limit})


class _TooLarge(Exception):
    pass


Authenticator = Callable[[Scope], Awaitable[Any]]


class Authenticate:
    """Every path but the public ones needs `Authorization: Bearer <key>`; the key's principal
    goes to `request.state.principal`. `authenticate(scope)` raises the error to answer."""

    def __init__(self, app: ASGIApp, authenticate: Authenticator,
                 on_error: Callable[[Exception, Scope], Awaitable[tuple[int, str, str, Any,
                                                                        list[tuple[bytes, bytes]]]]]
                 ) -> None:
        self.app, self.authenticate, self.on_error = app, authenticate, on_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or is_public(scope["path"]) or scope["method"] == "OPTIONS":
            await self.app(scope, receive, send)
            return
        try:
            principal = await self.authenticate(scope)
        except Exception as exc:
            status, code, message, details, headers = await self.on_error(exc, scope)
            await _json(send, status, code, message, details, headers)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


Recorder = Callable[[Scope, int, dict[str, Any]], Awaitable[None]]


class Audit:
    """One row per mutating request, whatever its outcome, after it was answered."""

    def __init__(self, app: ASGIApp, record: Recorder) -> None:
        self.app, self.record = app, record

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in MUTATING:
            await self.app(scope, receive, send)
            return
        status = 500
        noted: dict[str, Any] = {}
        token = _AUDIT.set(noted)

        async def watching(message: MutableMapping[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watching)
        finally:
            _AUDIT.reset(token)
            try:
                await self.record(scope, status, noted)
            except Exception:  # the answer is sent; a lost audit row must not turn it into a 500
                log.exception("could not record the audit row of %s %s", scope["method"],
                              scope["path"])


__all__ = ["Audit", "Authenticate", "BodyLimit", "RequestId", "is_public", "note"]
