"""/api-keys: who may call the API. The key itself is shown once, when it is made."""

from __future__ import annotations

from fastapi import APIRouter, Response

from api.deps import Admin, SessionDep
from api.schemas.access import KeyCreate, KeyCreated, KeyPublic
from api.schemas.common import errors
from api.services import keys

router = APIRouter(prefix="/api-keys", tags=["access"])
ERRORS = errors(401, 403, 404, 422)


@router.post("", status_code=201, response_model=KeyCreated, responses=ERRORS)
async def create_key(body: KeyCreate, session: SessionDep, who: Admin) -> KeyCreated:
    """A new key with at most the caller's role and namespaces; its `key` is never shown again."""
    return await keys.create(session, who, body)


@router.get("", response_model=list[KeyPublic], responses=ERRORS)
async def list_keys(session: SessionDep, who: Admin) -> list[KeyPublic]:
    """Keys of the caller's namespaces, without key material."""
    return await keys.list_keys(session, who)


@router.delete("/{key_id}", status_code=204, responses=ERRORS)
async def revoke_key(key_id: str, session: SessionDep, who: Admin) -> Response:
    """Revoke at once: every API process refuses the key from its next request on."""
    await keys.revoke(session, who, key_id)
    return Response(status_code=204)
