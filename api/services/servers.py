"""SSH servers: the record a worker connects with lives in Prefect; a row here lists it.

Each write goes to Prefect first (the record as a variable, the credential as a Secret block,
`flowforge.connectors.servers`), then to the database, so a server that is listed can be
connected to. Credentials are write-only: no response carries them, and a replacement without
one keeps the stored credential. A server's view shows the host key as Prefect holds it
(pinned there by a worker under `accept-new`) and the circuit breaker's state.
"""

from __future__ import annotations

import json

from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth import Principal
from api.middleware import note
from api.schemas.servers import (
    BreakerPublic,
    ServerBase,
    ServerCreate,
    ServerCredentials,
    ServerPublic,
    ServerTestResult,
    ServerUpdate,
)
from api.services.server_refs import refuse_if_used
from api.services.store import namespace_of
from api.settings import ApiSettings
from api.tables import ServerRow, utcnow
from flowforge.connectors.ssh import breaker_view, client_keys, connect, parse_host_key
from flowforge.controlplane.client import PrefectTarget
from flowforge.controlplane.store import server_directory
from flowforge.core.errors import ConflictError, InvalidRequestError, NotFoundError, SshError
from flowforge.core.names import SERVER_NAME_RE
from flowforge.core.servers import BreakerState, Credential, ServerRecord


def _credential(body: ServerCredentials, required: bool) -> Credential | None:
    """The credential to store, after checking it can be used; None keeps the stored one."""
    credential = Credential(private_key=body.private_key, passphrase=body.passphrase,
                            password=body.password)
    if not credential.private_key and not credential.password:
        if credential.passphrase:
            raise InvalidRequestError("passphrase", "a passphrase needs a private_key")
        if required:
            raise InvalidRequestError("private_key", "a server needs a credential: private_key "
                                      "(with passphrase if it has one) or password")
        return None
    try:
        client_keys(credential)
    except ValueError as exc:
        raise InvalidRequestError("passphrase" if credential.passphrase else "private_key",
                                  str(exc)) from exc
    return credential


def _record(name: str, body: ServerBase, namespace: str) -> ServerRecord:
    if body.host_key:
        try:
            parse_host_key(body.host_key)
        except ValueError as exc:
            raise InvalidRequestError("host_key", str(exc)) from exc
    for i, tag in enumerate(body.tags):
        if not SERVER_NAME_RE.match(tag):
            raise InvalidRequestError(f"tags[{i}]", f"tag '{tag[:80]}' must be lowercase "
                                      "letters, digits and '-'")
    return ServerRecord(name=name, namespace=namespace,
                        **body.model_dump(include=set(ServerBase.model_fields)))


async def _row(session: AsyncSession, name: str, who: Principal) -> ServerRow:
    row = (await session.exec(select(ServerRow).where(ServerRow.name == name))).first()
    if row is None or not who.sees(row.namespace):
        raise NotFoundError(f"server '{name}' not found", details={"server": name})
    note(namespace=row.namespace, target=f"server:{name}")
    return row


def _public(row: ServerRow, record: ServerRecord | None, breaker: BreakerState,
            threshold: int) -> ServerPublic:
    base = record.model_dump(exclude={"name", "namespace"}) if record else {
        "host": row.host, "port": row.port, "username": row.username,
        "tags": json.loads(row.tags)}
    return ServerPublic(name=row.name, namespace=row.namespace,
                        breaker=BreakerPublic(**breaker_view(breaker, threshold)),
                        created_at=row.created_at, updated_at=row.updated_at, **base)


async def create(session: AsyncSession, target: PrefectTarget, settings: ApiSettings,
                 body: ServerCreate, who: Principal) -> ServerPublic:
    namespace = namespace_of(who, body.namespace)
    note(target=f"server:{body.name}")
    record = _record(body.name, body, namespace)
    credential = _credential(body, required=True)
    if (await session.exec(select(ServerRow).where(ServerRow.name == body.name))).first():
        raise ConflictError(f"server '{body.name}' already exists; PUT /servers/{body.name} "
                            "replaces it", details={"server": body.name})
    await server_directory(target).save(record, credential)
    row = ServerRow(name=record.name, namespace=namespace, host=record.host, port=record.port,
                    username=record.username, tags=json.dumps(record.tags))
    session.add(row)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise ConflictError(f"server '{body.name}' already exists",
                            details={"server": body.name}) from exc
    await session.refresh(row)
    return _public(row, record, BreakerState(), settings.ssh_breaker_failures)


async def list_servers(session: AsyncSession, target: PrefectTarget,
                       settings: ApiSettings, who: Principal) -> list[ServerPublic]:
    rows = [r for r in (await session.exec(select(ServerRow).order_by(col(ServerRow.name)))).all()
            if who.sees(r.namespace)]
    directory = server_directory(target)
    records, breakers = await directory.records(), await directory.breakers()
    return [_public(row, records.get(row.name), breakers.get(row.name, BreakerState()),
                    settings.ssh_breaker_failures) for row in rows]


async def get(session: AsyncSession, target: PrefectTarget, settings: ApiSettings,
              name: str, who: Principal) -> ServerPublic:
    row = await _row(session, name, who)
    directory = server_directory(target)
    return _public(row, await directory.record(name), await directory.breaker(name),
                   settings.ssh_breaker_failures)


async def replace(session: AsyncSession, target: PrefectTarget, settings: ApiSettings,
                  name: str, body: ServerUpdate, who: Principal) -> ServerPublic:
    """A full replacement of the record. Moving a server (another host or port) needs its
    credential again and its host key again (or `accept-new`), so the stored password is
    never sent to a new address, and a key pinned for the old one is never trusted for it."""
    row = await _row(session, name, who)
    record = _record(name, body, row.namespace)
    moved = (record.host, record.port) != (row.host, row.port)
    credential = _credential(body, required=moved)
    directory = server_directory(target)
    if not moved and not record.host_key:
        stored = await directory.record(name)  # keep the key a worker pinned under accept-new
        record.host_key = stored.host_key if stored is not None else None
    await directory.save(record, credential)
    row.host, row.port, row.username = record.host, record.port, record.username
    row.tags, row.updated_at = json.dumps(record.tags), utcnow()
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return _public(row, record, await directory.breaker(name), settings.ssh_breaker_failures)


async def delete(session: AsyncSession, target: PrefectTarget, name: str,
                 who: Principal) -> None:
    row = await _row(session, name, who)
    await refuse_if_used(session, name)  # 409 naming the workflows
    await server_directory(target).delete(name)
    await session.delete(row)
    await session.commit()


async def test(session: AsyncSession, target: PrefectTarget, settings: ApiSettings,
               name: str, who: Principal) -> ServerTestResult:
    """Connect and log in now, bypassing the circuit breaker; a success closes it."""
    await _row(session, name, who)
    directory = server_directory(target)
    try:
        record, credential = await directory.server(name)
        connected = await connect(record, credential, timeout=settings.ssh_connect_timeout)
    except SshError as exc:
        return ServerTestResult(ok=False, reason=exc.reason, message=exc.message)
    connected.connection.close()
    pinned = None
    if connected.new_host_key and record.host_key_policy == "accept-new":
        await directory.pin_host_key(name, connected.new_host_key)
        pinned = connected.new_host_key
    if (await directory.breaker(name)).failures:
        await directory.save_breaker(name, BreakerState())
    return ServerTestResult(ok=True, latency_ms=round(connected.latency * 1000, 1),
                            host_key=pinned)


__all__ = ["create", "delete", "get", "list_servers", "replace", "test"]
