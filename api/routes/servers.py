"""/servers: SSH targets. The record a worker connects with lives in Prefect; a row here lists it.

Each write goes to Prefect first (the record as a variable, the credential as a Secret block,
see flowforge/runtime/ssh_servers.py), then to the database, so a server that is listed can be
connected to. Credentials are write-only: no response carries them, and PUT without one keeps
the stored credential. `GET /servers/{name}` shows the host key as Prefect holds it (pinned
there by a worker under `accept-new`) and the circuit breaker's state.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Literal

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.deps import SessionDep, SettingsDep, TargetDep
from api.schemas import ErrorBody
from api.server_refs import refuse_if_used
from api.tables import ServerRow, utcnow
from flowforge.errors import ConflictError, InvalidRequestError, NotFoundError, SshError
from flowforge.prefect_sync import DeployTarget, prefect_client
from flowforge.runtime.ssh_connect import breaker_view, client_keys, connect, parse_host_key
from flowforge.runtime.ssh_servers import (
    BreakerState,
    Credential,
    PrefectDirectory,
    ServerRecord,
)
from flowforge.spec import SERVER_NAME_RE

router = APIRouter(prefix="/servers", tags=["servers"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 422: {"model": ErrorBody},
    503: {"model": ErrorBody}}
NAME = SERVER_NAME_RE.pattern
MAX_KEY_CHARS = 16 * 1024


class ServerBase(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field(min_length=1, max_length=255)
    port: int = Field(default=22, ge=1, le=65535)
    username: str = Field(min_length=1, max_length=64)
    host_key: str | None = Field(default=None, max_length=4096,
                                 description="the server's public host key or a known_hosts line")
    host_key_policy: Literal["strict", "accept-new"] = "strict"
    tags: list[str] = Field(default_factory=list, max_length=50)


class ServerCredentials(BaseModel):
    private_key: str | None = Field(default=None, max_length=MAX_KEY_CHARS)
    passphrase: str | None = Field(default=None, max_length=1024)
    password: str | None = Field(default=None, max_length=1024)


class ServerCreate(ServerBase, ServerCredentials):
    name: str = Field(pattern=NAME)


class ServerUpdate(ServerBase, ServerCredentials):
    """A full replacement of the record; leave every credential field out to keep the stored one."""


class BreakerPublic(BaseModel):
    state: Literal["closed", "open", "half_open"]
    consecutive_failures: int
    open_until: str | None
    last_error: str | None


class ServerPublic(ServerBase):
    name: str
    breaker: BreakerPublic
    created_at: datetime
    updated_at: datetime


class ServerTestResult(BaseModel):
    ok: bool
    latency_ms: float | None = None
    reason: str | None = Field(default=None, description="refused, timeout, unreachable, "
                               "auth_failed, host_key_unknown, host_key_mismatch")
    message: str | None = None
    host_key: str | None = Field(default=None, description="the key pinned by this test "
                                 "(host_key_policy accept-new, first contact)")


def _directory(target: DeployTarget) -> PrefectDirectory:
    return PrefectDirectory(lambda: prefect_client(target))


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


def _record(name: str, body: ServerBase) -> ServerRecord:
    if body.host_key:
        try:
            parse_host_key(body.host_key)
        except ValueError as exc:
            raise InvalidRequestError("host_key", str(exc)) from exc
    for i, tag in enumerate(body.tags):
        if not SERVER_NAME_RE.match(tag):
            raise InvalidRequestError(f"tags[{i}]", f"tag '{tag[:80]}' must be lowercase "
                                      "letters, digits and '-'")
    return ServerRecord(name=name, **body.model_dump(include=set(ServerBase.model_fields)))


async def _row(session: AsyncSession, name: str) -> ServerRow:
    row = (await session.exec(select(ServerRow).where(ServerRow.name == name))).first()
    if row is None:
        raise NotFoundError(f"server '{name}' not found", details={"server": name})
    return row


def _public(row: ServerRow, record: ServerRecord | None, breaker: BreakerState,
            threshold: int) -> ServerPublic:
    base = record.model_dump(exclude={"name"}) if record else {
        "host": row.host, "port": row.port, "username": row.username,
        "tags": json.loads(row.tags)}
    return ServerPublic(name=row.name, breaker=BreakerPublic(**breaker_view(breaker, threshold)),
                        created_at=row.created_at, updated_at=row.updated_at, **base)


@router.post("", status_code=201, response_model=ServerPublic, responses=ERRORS)
async def create_server(body: ServerCreate, session: SessionDep, target: TargetDep,
                        settings: SettingsDep) -> ServerPublic:
    record = _record(body.name, body)
    credential = _credential(body, required=True)
    if (await session.exec(select(ServerRow).where(ServerRow.name == body.name))).first():
        raise ConflictError(f"server '{body.name}' already exists; PUT /servers/{body.name} "
                            "replaces it", details={"server": body.name})
    await _directory(target).save(record, credential)
    row = ServerRow(name=record.name, host=record.host, port=record.port,
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


@router.get("", response_model=list[ServerPublic], responses=ERRORS)
async def list_servers(session: SessionDep, target: TargetDep,
                       settings: SettingsDep) -> list[ServerPublic]:
    rows = (await session.exec(select(ServerRow).order_by(col(ServerRow.name)))).all()
    directory = _directory(target)
    records, breakers = await directory.records(), await directory.breakers()
    return [_public(row, records.get(row.name), breakers.get(row.name, BreakerState()),
                    settings.ssh_breaker_failures) for row in rows]


@router.get("/{name}", response_model=ServerPublic, responses=ERRORS)
async def get_server(name: str, session: SessionDep, target: TargetDep,
                     settings: SettingsDep) -> ServerPublic:
    row = await _row(session, name)
    directory = _directory(target)
    return _public(row, await directory.record(name), await directory.breaker(name),
                   settings.ssh_breaker_failures)


@router.put("/{name}", response_model=ServerPublic, responses=ERRORS)
async def replace_server(name: str, body: ServerUpdate, session: SessionDep, target: TargetDep,
                         settings: SettingsDep) -> ServerPublic:
    row = await _row(session, name)
    record = _record(name, body)
    credential = _credential(body, required=False)
    directory = _directory(target)
    await directory.save(record, credential)
    row.host, row.port, row.username = record.host, record.port, record.username
    row.tags, row.updated_at = json.dumps(record.tags), utcnow()
    session.add(row)
    await session.commit()
    await session.refresh(row)
    return _public(row, record, await directory.breaker(name), settings.ssh_breaker_failures)


@router.delete("/{name}", status_code=204, responses=ERRORS)
async def delete_server(name: str, session: SessionDep, target: TargetDep) -> Response:
    row = await _row(session, name)
    await refuse_if_used(session, name)  # 409 naming the workflows
    await _directory(target).delete(name)
    await session.delete(row)
    await session.commit()
    return Response(status_code=204)


@router.post("/{name}/test", response_model=ServerTestResult, responses=ERRORS)
async def test_server(name: str, session: SessionDep, target: TargetDep,
                      settings: SettingsDep) -> ServerTestResult:
    """Connect and log in now, bypassing the circuit breaker; a success closes it."""
    await _row(session, name)
    directory = _directory(target)
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
