"""/audit: what changed, by whom, newest first (admin; an admin of some namespaces sees theirs)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import Admin, SessionDep
from api.schemas.access import AuditEntry
from api.schemas.common import errors
from api.services import audit

router = APIRouter(tags=["access"])


@router.get("/audit", response_model=list[AuditEntry], responses=errors(401, 403, 422))
async def read_audit(
    session: SessionDep, who: Admin,
    actor: Annotated[str | None, Query(max_length=150)] = None,
    action: Annotated[str | None, Query(max_length=100)] = None,
    target: Annotated[str | None, Query(max_length=300)] = None,
    namespace: Annotated[str | None, Query(max_length=63)] = None,
    since: datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=audit.MAX_PAGE)] = 100,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
) -> list[AuditEntry]:
    return await audit.query(session, who, actor=actor, action=action, target=target,
                             namespace=namespace, since=since, limit=limit, offset=offset)
