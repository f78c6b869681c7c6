"""Who is asking, and what they may do: API keys, roles, permissions, namespaces.

A key is `ffk_` and 43 random URL-safe characters (256 bits), so secret scanners can find one
by its prefix; only its SHA-256 is stored (a random key needs no slow hash). Roles include the
one before: viewer < runner < editor < admin. Every route declares the one permission it needs
with `Allow(...)` in its decorator, and `tests/unit/test_access.py` fails for a route without
one. A key acts only in its namespaces (`["*"]` is all of them): what is in another namespace
is "not found" to it.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from enum import IntEnum, StrEnum
from typing import Final

from fastapi import Request

from flowforge.core.errors import FlowForgeError

KEY_PREFIX: Final = "ffk_"
ALL_NAMESPACES: Final = "*"


class AuthenticationError(FlowForgeError):
    """No key, or one that is unknown, revoked or expired (401)."""

    code = "unauthenticated"


class PermissionDeniedError(FlowForgeError):
    """The key's role may not do this (403)."""

    code = "forbidden"


class Role(IntEnum):
    viewer = 1
    runner = 2
    editor = 3
    admin = 4


class Permission(StrEnum):
    """What a route does, and the least role that may do it (`MINIMUM`)."""

    READ = "read"  # workflows, runs, logs, triggers, variables, names of secrets and servers
    RUN = "run"  # start, cancel, repair, rerun runs; emit events
    DEFINE = "define"  # workflows, triggers, variables, sync
    ADMIN = "admin"  # keys, servers, secrets, concurrency limits, namespaces, the audit log


MINIMUM: Final = {Permission.READ: Role.viewer, Permission.RUN: Role.runner,
                  Permission.DEFINE: Role.editor, Permission.ADMIN: Role.admin}


def new_key() -> str:
    return KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def looks_like_key(value: str) -> bool:
    return value.startswith(KEY_PREFIX) and 20 < len(value) < 200


@dataclass(frozen=True)
class Principal:
    """The key a request was made with."""

    key_id: str
    name: str
    role: Role
    namespaces: frozenset[str] = field(default_factory=lambda: frozenset({ALL_NAMESPACES}))

    @property
    def every_namespace(self) -> bool:
        return ALL_NAMESPACES in self.namespaces

    def sees(self, namespace: str) -> bool:
        return self.every_namespace or namespace in self.namespaces

    def may(self, permission: Permission) -> bool:
        return self.role >= MINIMUM[permission]

    def covers(self, namespaces: frozenset[str]) -> bool:
        """Whether every namespace in `namespaces` is one of this key's."""
        return self.every_namespace or (ALL_NAMESPACES not in namespaces
                                        and namespaces <= self.namespaces)


class Allow:
    """The dependency a route declares its permission with: `dependencies=[Allow(...)]`
    (wrapped in `Depends`); it answers 403 for a key whose role may not."""

    def __init__(self, permission: Permission, *, every_namespace: bool = False) -> None:
        self.permission = permission
        #: The resource is not namespaced (concurrency limits, keys of all namespaces): only a
        #: key of every namespace may touch it.
        self.every_namespace = every_namespace

    async def __call__(self, request: Request) -> Principal:
        principal: Principal | None = getattr(request.state, "principal", None)
        if principal is None:  # the authentication middleware lets no request through without
            raise AuthenticationError("an API key is required")
        if not principal.may(self.permission) or (self.every_namespace
                                                  and not principal.every_namespace):
            raise PermissionDeniedError(
                f"key '{principal.name}' ({principal.role.name}) may not do this: it needs the "
                f"{MINIMUM[self.permission].name} role"
                + (" in every namespace" if self.every_namespace else ""),
                details={"needs": MINIMUM[self.permission].name, "role": principal.role.name})
        return principal


__all__ = ["ALL_NAMESPACES", "KEY_PREFIX", "MINIMUM", "Allow", "AuthenticationError",
           "Permission", "PermissionDeniedError", "Principal", "Role", "key_hash", "looks_like_key",
           "new_key"]
