"""/namespaces: an admin's settings per namespace (isolation, admission policy)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import GlobalAdmin, Reader, SessionDep
from api.schemas.access import NamespacePublic, NamespacePut
from api.schemas.common import errors
from api.services import policies
from api.services.store import namespace_of

router = APIRouter(prefix="/namespaces", tags=["access"])
ERRORS = errors(401, 403, 404, 422)


@router.get("/{name}", response_model=NamespacePublic, responses=ERRORS)
async def get_namespace(name: str, session: SessionDep, who: Reader) -> NamespacePublic:
    return await policies.settings_of(session, namespace_of(who, name))


@router.put("/{name}", response_model=NamespacePublic, responses=ERRORS)
async def put_namespace(name: str, body: NamespacePut, session: SessionDep,
                        who: GlobalAdmin) -> NamespacePublic:
    """Set a namespace's isolation (`container`: its script jobs run in containers only) and
    the policy its documents must pass before they are stored. An admin of every namespace
    only: the policy is what guards the shared workers from that namespace's own admins."""
    return await policies.put(session, namespace_of(who, name), body)
