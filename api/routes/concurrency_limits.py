"""/concurrency-limits: the named limits jobs hold (`concurrency: [gpu]`), as Prefect holds them.

They are Prefect global concurrency limits, shared by every workflow on the server. The sync
creates a missing one with one slot (`flowforge.controlplane.limits`); this resource lets an
operator see them and set their size without the Prefect CLI.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from api.deps import GlobalAdmin, Reader, TargetDep
from api.schemas.common import errors
from api.schemas.store import LimitBody, LimitPublic
from api.services import store

router = APIRouter(prefix="/concurrency-limits", tags=["concurrency-limits"])
ERRORS = errors(404, 422, 503)


@router.get("", response_model=list[LimitPublic], responses=ERRORS)
async def list_limits(target: TargetDep, who: Reader, limit: Annotated[int, Query(ge=1, le=200)] = 200,
                      offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> list[LimitPublic]:
    return await store.list_limits(target, limit, offset)


@router.get("/{name}", response_model=LimitPublic, responses=ERRORS)
async def get_limit(name: str, target: TargetDep, who: Reader) -> LimitPublic:
    return await store.get_limit(target, name)


@router.put("/{name}", response_model=LimitPublic, responses=ERRORS)
async def put_limit(name: str, body: LimitBody, target: TargetDep,
                    who: GlobalAdmin) -> LimitPublic:
    """Create the limit or change its number of slots."""
    return await store.put_limit(target, name, body.limit)
