"""API keys: made (shown once), listed without their material, revoked, and looked up.

A lookup reads the database every time, so a key revoked through one API process is refused
by every other at once; only the SHA-256 of a key is stored (`api.auth`).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select as sa_select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth import (
    ALL_NAMESPACES,
    AuthenticationError,
    PermissionDeniedError,
    Principal,
    Role,
    key_hash,
    looks_like_key,
    new_key,
)
from api.middleware import note
from api.schemas.access import KeyCreate, KeyCreated, KeyPublic
from api.tables import ApiKeyRow, utcnow
from flowforge.controlplane.settings import ADMIN_KEY_FILE
from flowforge.core.errors import InvalidRequestError, NotFoundError
from flowforge.core.names import NAMESPACE_RE

_COLUMNS = tuple(col(c) for c in (ApiKeyRow.id, ApiKeyRow.name, ApiKeyRow.role,
                                   ApiKeyRow.namespaces, ApiKeyRow.expires_at,
                                   ApiKeyRow.revoked_at))


def _aware(value: datetime | None) -> datetime | None:
    # SQLite hands back naive datetimes for timezone-aware columns.
    if value is None:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def public(row: ApiKeyRow) -> KeyPublic:
    return KeyPublic(id=row.id, name=row.name, role=row.role,
                     namespaces=json.loads(row.namespaces), prefix=row.prefix,
                     created_at=_aware(row.created_at) or row.created_at,
                     expires_at=_aware(row.expires_at), revoked_at=_aware(row.revoked_at))


class KeyReader:
    """Looks a presented key up, on every request (so a revocation counts at once, in every
    API process). On SQLite a read-only connection of its own answers on the event loop: one
    unique-index read is microseconds, while a trip through the async engine's thread cost
    milliseconds under load (bench/auth.py). Elsewhere the async session does it."""

    _SQL = ("SELECT id, name, role, namespaces, expires_at, revoked_at FROM api_keys "
            "WHERE key_hash = ?")

    def __init__(self, maker: async_sessionmaker[AsyncSession], db_url: str) -> None:
        self._maker = maker
        self._sqlite: sqlite3.Connection | None = None
        scheme, _, path = db_url.partition(":///")
        if scheme.split("+", 1)[0] == "sqlite" and path and path != ":memory:":
            self._sqlite = sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                           check_same_thread=False, isolation_level=None)
            self._sqlite.execute("PRAGMA busy_timeout = 200")

    async def find(self, digest: str) -> Sequence[Any] | None:
        if self._sqlite is not None:
            try:
                row = self._sqlite.execute(self._SQL, (digest,)).fetchone()
            except sqlite3.Error:  # locked past the timeout: the async path waits properly
                pass
            else:
                if row is None:
                    return None
                key_id, name, role, namespaces, expires_at, revoked_at = row
                return (key_id, name, role, namespaces, _parse(expires_at), _parse(revoked_at))
        async with self._maker() as session:
            found = (await session.execute(sa_select(*_COLUMNS).where(
                col(ApiKeyRow.key_hash) == digest))).first()
        return None if found is None else tuple(found)

    def close(self) -> None:
        if self._sqlite is not None:
            self._sqlite.close()


def _parse(value: Any) -> datetime | None:
    """A datetime column as SQLite's driver-less read gives it (text)."""
    if value is None or isinstance(value, datetime):
        return value
    return datetime.fromisoformat(str(value))


async def principal_for(reader: KeyReader, key: str) -> Principal:
    """The principal of a presented key; `AuthenticationError` for any key that is not live."""
    if not looks_like_key(key):
        raise AuthenticationError("that is not a FlowForge API key (they start with 'ffk_')")
    found = await reader.find(key_hash(key))
    if found is None:
        raise AuthenticationError("unknown API key")
    key_id, name, role, namespaces, expires_at, revoked_at = found
    if revoked_at is not None:
        raise AuthenticationError(f"API key '{name}' was revoked")
    expires = _aware(expires_at)
    if expires is not None and expires <= datetime.now(UTC):
        raise AuthenticationError(f"API key '{name}' expired at {expires.isoformat()}")
    return Principal(key_id, name, Role[role], frozenset(json.loads(namespaces)))


def _namespaces(given: list[str]) -> frozenset[str]:
    if ALL_NAMESPACES in given:
        if len(given) > 1:
            raise InvalidRequestError("namespaces", '"*" means every namespace; list it alone')
        return frozenset({ALL_NAMESPACES})
    for i, name in enumerate(given):
        if not NAMESPACE_RE.match(name):
            raise InvalidRequestError(f"namespaces[{i}]", f"'{name[:80]}' is not a namespace "
                                      "name (lowercase letters, digits and single dashes)")
    return frozenset(given)


async def create(session: AsyncSession, who: Principal | None, body: KeyCreate) -> KeyCreated:
    """A new key; `who` None is FlowForge itself (the first admin key)."""
    role, namespaces = Role[body.role], _namespaces(body.namespaces)
    if who is not None and (role > who.role or not who.covers(namespaces)):
        raise PermissionDeniedError(f"key '{who.name}' may not make a key with more than its own "
                                    "role and namespaces")
    expires = _aware(body.expires_at)
    if expires is not None and expires <= datetime.now(UTC):
        raise InvalidRequestError("expires_at", "the expiry is in the past")
    key = new_key()
    row = ApiKeyRow(name=body.name, role=role.name, namespaces=json.dumps(sorted(namespaces)),
                    key_hash=key_hash(key), prefix=key[:10], expires_at=expires,
                    created_by=None if who is None else who.key_id)
    session.add(row)
    await session.commit()
    await session.refresh(row)
    note(target=f"api-key:{row.id}")
    return KeyCreated(**public(row).model_dump(), key=key)


async def list_keys(session: AsyncSession, who: Principal) -> list[KeyPublic]:
    rows = (await session.exec(select(ApiKeyRow).order_by(col(ApiKeyRow.created_at)))).all()
    return [public(r) for r in rows if who.covers(frozenset(json.loads(r.namespaces)))]


async def revoke(session: AsyncSession, who: Principal, key_id: str) -> None:
    row = await session.get(ApiKeyRow, key_id)
    if row is None or not who.covers(frozenset(json.loads(row.namespaces))):
        raise NotFoundError(f"API key '{key_id}' not found", details={"id": key_id})
    note(target=f"api-key:{row.id}")
    if row.revoked_at is None:
        row.revoked_at = utcnow()
        session.add(row)
        await session.commit()


async def ensure_admin_key(session: AsyncSession, home: Path) -> Path | None:
    """On a FlowForge home with no key at all, make an admin key and write it to
    `<home>/admin.key` (0600); the path, or None when keys exist already."""
    if (await session.exec(select(ApiKeyRow.id).limit(1))).first() is not None:
        return None
    created = await create(session, None, KeyCreate(name="admin", role="admin"))
    path = home / ADMIN_KEY_FILE
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(created.key + "\n")
    path.chmod(0o600)
    return path


__all__ = ["ADMIN_KEY_FILE", "KeyReader", "create", "ensure_admin_key", "list_keys",
           "principal_for", "public", "revoke"]
