"""/servers: SSH targets (`api/services/servers.py` says where each part is kept)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import SessionDep, SettingsDep, TargetDep
from api.schemas.common import errors
from api.schemas.servers import ServerCreate, ServerPublic, ServerTestResult, ServerUpdate
from api.services import servers

router = APIRouter(prefix="/servers", tags=["servers"])
ERRORS = errors(404, 409, 422, 503)


@router.post("", status_code=201, response_model=ServerPublic, responses=ERRORS)
async def create_server(body: ServerCreate, session: SessionDep, target: TargetDep,
                        settings: SettingsDep) -> ServerPublic:
    return await servers.create(session, target, settings, body)


@router.get("", response_model=list[ServerPublic], responses=ERRORS)
async def list_servers(session: SessionDep, target: TargetDep,
                       settings: SettingsDep) -> list[ServerPublic]:
    return await servers.list_servers(session, target, settings)


@router.get("/{name}", response_model=ServerPublic, responses=ERRORS)
async def get_server(name: str, session: SessionDep, target: TargetDep,
                     settings: SettingsDep) -> ServerPublic:
    return await servers.get(session, target, settings, name)


@router.put("/{name}", response_model=ServerPublic, responses=ERRORS)
async def replace_server(name: str, body: ServerUpdate, session: SessionDep, target: TargetDep,
                         settings: SettingsDep) -> ServerPublic:
    """A full replacement of the record; leave every credential field out to keep the stored one."""
    return await servers.replace(session, target, settings, name, body)


@router.delete("/{name}", status_code=204, responses=ERRORS)
async def delete_server(name: str, session: SessionDep, target: TargetDep) -> Response:
    await servers.delete(session, target, name)
    return Response(status_code=204)


@router.post("/{name}/test", response_model=ServerTestResult, responses=ERRORS)
async def test_server(name: str, session: SessionDep, target: TargetDep,
                      settings: SettingsDep) -> ServerTestResult:
    """Connect and log in now, bypassing the circuit breaker; a success closes it."""
    return await servers.test(session, target, settings, name)
