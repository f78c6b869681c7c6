"""The glue between the request middleware and the services: who a request is, what to audit.

`authenticate` reads `Authorization: Bearer <key>`; a client address that keeps failing is
refused for a while (`FLOWFORGE_RATE_LIMIT_AUTH`) before its keys are even looked at, so keys
cannot be guessed at speed. `record` writes a request's audit row from what the route noted.
"""

from __future__ import annotations

from typing import Any

from starlette.datastructures import Headers
from starlette.types import Scope

from api.auth import AuthenticationError, Principal
from api.errors import headers_of, status_of
from api.ratelimit import RateLimitedError, RateLimits
from api.services import audit, keys
from flowforge.core.errors import FlowForgeError


def client_of(scope: Scope) -> str:
    client = scope.get("client")
    return str(client[0]) if client else "-"


async def authenticate(scope: Scope) -> Principal:
    state = scope["app"].state
    limits: RateLimits = state.limits
    client = client_of(scope)
    wait = await limits.blocked(limits.auth_failures, client)
    if wait is not None:
        raise RateLimitedError(f"too many failed authentications from {client}; retry in "
                               f"{wait} s", wait)
    header = Headers(scope=scope).get("authorization", "")
    scheme, _, token = header.partition(" ")
    try:
        if scheme.lower() != "bearer" or not token.strip():
            raise AuthenticationError("an API key is required: Authorization: Bearer <key> "
                                      "(the first admin key is in $FLOWFORGE_HOME/admin.key)")
        return await keys.principal_for(state.key_reader, token.strip())
    except AuthenticationError:
        await limits.hit_quietly(limits.auth_failures, client)
        raise


async def auth_error(exc: Exception, scope: Scope) -> tuple[int, str, str, Any,
                                                          list[tuple[bytes, bytes]]]:
    if not isinstance(exc, FlowForgeError):
        raise exc
    headers = [(k.lower().encode(), v.encode()) for k, v in headers_of(exc).items()]
    return status_of(exc), exc.code, exc.message, exc.details, headers


async def record(scope: Scope, status: int, noted: dict[str, Any]) -> None:
    state = scope.get("state", {})
    principal: Principal | None = state.get("principal")
    route = scope.get("route")
    actor, actor_name = audit.actor_of(principal, scope["path"])
    action = getattr(route, "name", None) or f"{scope['method']} {scope['path']}"
    await audit.record(scope["app"].state.sessionmaker, actor=actor, actor_name=actor_name,
                       action=action, target=noted.get("target") or scope["path"],
                       namespace=noted.get("namespace"), outcome=status,
                       request_id=state.get("request_id"), client=client_of(scope))


__all__ = ["auth_error", "authenticate", "client_of", "record"]
