"""/servers: SSH targets (`api/services/servers.py` says where each part is kept)."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import Admin, Reader, SessionDep, SettingsDep, TargetDep
from api.schemas.common import errors
from api.schemas.servers import ServerCreate, ServerPublic, ServerTestResult, ServerUpdate
from api.services import servers

router = APIRouter(prefix="/servers", tags=["servers"])
ERRORS = errors(401, 403, 404, 409, 422, 503)


@router.post("", status_code=201, response_model=ServerPublic, responses=ERRORS)
async def create_server(body: ServerCreate, session: SessionDep, target: TargetDep,
                        settings: SettingsDep, who: Admin) -> ServerPublic:
    return await servers.create(session, target, settings, body, who)


@router.get("", response_model=list[ServerPublic], responses=ERRORS)
async def list_servers(session: SessionDep, target: TargetDep, settings: SettingsDep,
                       who: Reader) -> list[ServerPublic]:
    return await servers.list_servers(session, target, settings, who)


@router.get("/{name}", response_model=ServerPublic, responses=ERRORS)
async def get_server(name: str, session: SessionDep, target: TargetDep,
                     settings: SettingsDep, who: Reader) -> ServerPublic:
    return await servers.get(session, target, settings, name, who)


@router.put("/{name}", response_model=ServerPublic, responses=ERRORS)
async def replace_server(name: str, body: ServerUpdate, session: SessionDep, target: TargetDep,
                         settings: SettingsDep, who: Admin) -> ServerPublic:
    """A full replacement of the record; leave every credential field out to keep the stored
    one (not when the host or port changes: then the credential must be given again)."""
    return await servers.replace(session, target, settings, name, body, who)


@router.delete("/{name}", status_code=204, responses=ERRORS)
async def delete_server(name: str, session: SessionDep, target: TargetDep,
                        who: Admin) -> Response:
    await servers.delete(session, target, name, who)
    return Response(status_code=204)


@router.post("/{name}/test", response_model=ServerTestResult, responses=ERRORS)
async def test_server(name: str, session: SessionDep, target: TargetDep,
                      settings: SettingsDep, who: Admin) -> ServerTestResult:
    """Connect and log in now, bypassing the circuit breaker; a success closes it."""
    return await servers.test(session, target, settings, name, who)
