"""/concurrency-limits: the named limits jobs hold (`concurrency: [gpu]`), as Prefect holds them.

They are Prefect global concurrency limits, shared by every workflow on the server. The sync
creates a missing one with one slot (flowforge/limit_sync.py); this resource lets an operator
see them and set their size without the Prefect CLI. Prefect is the only store.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate, GlobalConcurrencyLimitUpdate
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, Field

from api.deps import TargetDep
from api.schemas import ErrorBody
from flowforge.controlflow import LIMIT_NAME_RE
from flowforge.errors import InvalidRequestError, NotFoundError
from flowforge.prefect_sync import prefect_client

router = APIRouter(prefix="/concurrency-limits", tags=["concurrency-limits"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}


class LimitBody(BaseModel):
    limit: Annotated[int, Field(ge=0, le=100000, description="slots; 0 holds every job back")]


class LimitPublic(BaseModel):
    name: str
    limit: int
    active_slots: int
    active: bool


def _public(found: GlobalConcurrencyLimitResponse) -> LimitPublic:
    return LimitPublic(name=found.name, limit=found.limit, active_slots=found.active_slots,
                       active=found.active)


def _name(name: str) -> str:
    if not LIMIT_NAME_RE.match(name):
        raise InvalidRequestError("name", f"'{name[:100]}' is not a concurrency limit name "
                                  "(lowercase letters, digits, '_', '.', '-')")
    return name


@router.get("", response_model=list[LimitPublic], responses=ERRORS)
async def list_limits(target: TargetDep, limit: Annotated[int, Query(ge=1, le=200)] = 200,
                      offset: Annotated[int, Query(ge=0)] = 0) -> list[LimitPublic]:
    async with prefect_client(target) as client:
        found = await client.read_global_concurrency_limits(limit=limit, offset=offset)
    return [_public(f) for f in found]


@router.get("/{name}", response_model=LimitPublic, responses=ERRORS)
async def get_limit(name: str, target: TargetDep) -> LimitPublic:
    async with prefect_client(target) as client:
        try:
            return _public(await client.read_global_concurrency_limit_by_name(_name(name)))
        except ObjectNotFound as exc:
            raise NotFoundError(f"concurrency limit '{name}' not found",
                                details={"name": name}) from exc


@router.put("/{name}", response_model=LimitPublic, responses=ERRORS)
async def put_limit(name: str, body: LimitBody, target: TargetDep) -> LimitPublic:
    """Create the limit or change its number of slots."""
    async with prefect_client(target) as client:
        try:
            await client.update_global_concurrency_limit(
                _name(name), GlobalConcurrencyLimitUpdate(limit=body.limit))
        except ObjectNotFound:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=body.limit))
        return _public(await client.read_global_concurrency_limit_by_name(name))
