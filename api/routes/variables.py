"""/variables: JSON values shared by jobs, stored as Prefect variables.

Prefect holds them, so workers read and write them without FlowForge (the job helpers
`get_variable` / `set_variable`). Concurrent writers: the last write per key wins, and a
create racing another create for the same new key turns into an update rather than an error.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import Editor, Reader, TargetDep
from api.schemas.common import errors
from api.schemas.store import VariableBody, VariablePublic
from api.services import store

Namespace = Annotated[str, Query(max_length=63, description="the namespace it belongs to")]
router = APIRouter(prefix="/variables", tags=["variables"])
ERRORS = errors(404, 422, 503)


@router.get("", response_model=list[VariablePublic], responses=ERRORS)
async def list_variables(target: TargetDep, who: Reader,
                         limit: Annotated[int, Query(ge=1, le=200)] = 200,
                         offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
                         namespace: Namespace = "default") -> list[VariablePublic]:
    return await store.list_variables(target, who, namespace, limit, offset)


@router.get("/{key}", response_model=VariablePublic, responses=ERRORS)
async def get_variable(key: str, target: TargetDep, who: Reader,
                       namespace: Namespace = "default") -> VariablePublic:
    return await store.get_variable(target, who, namespace, key)


@router.put("/{key}", response_model=VariablePublic, responses=ERRORS)
async def put_variable(key: str, body: VariableBody, target: TargetDep, who: Editor,
                       namespace: Namespace = "default") -> VariablePublic:
    """Create or replace a variable (last writer wins)."""
    return await store.put_variable(target, who, namespace, key, body.value)


@router.delete("/{key}", status_code=204, responses=ERRORS)
async def delete_variable(key: str, target: TargetDep, who: Editor,
                          namespace: Namespace = "default") -> Response:
    await store.delete_variable(target, who, namespace, key)
    return Response(status_code=204)
