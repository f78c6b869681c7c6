"""/variables: JSON values shared by jobs, stored as Prefect variables.

Prefect holds them, so workers read and write them without FlowForge (the job helpers
`get_variable` / `set_variable`). Scope is global: FlowForge has no users yet; once it does,
per-user variables become a key prefix here and in the runtime. Concurrent writers: the last
write per key wins, and a create racing another create for the same new key turns into an
update rather than an error, so no write is lost.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from prefect.client.schemas.objects import Variable
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, Field

from api.deps import TargetDep
from api.schemas import ErrorBody
from flowforge.errors import InvalidRequestError, NotFoundError
from flowforge.prefect_sync import prefect_client
from flowforge.runtime import variables
from flowforge.runtime.variables import MAX_VALUE_CHARS, name_problem, value_problem

router = APIRouter(prefix="/variables", tags=["variables"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}


class VariableBody(BaseModel):
    value: Any = Field(..., description=f"any JSON value, at most {MAX_VALUE_CHARS} characters "
                       "as JSON")


class VariablePublic(BaseModel):
    key: str
    value: Any


def _key(key: str) -> str:
    problem = name_problem(key)
    if problem:
        raise InvalidRequestError("key", problem)
    return key


@router.get("", response_model=list[VariablePublic], responses=ERRORS)
async def list_variables(target: TargetDep, limit: Annotated[int, Query(ge=1, le=200)] = 200,
                         offset: Annotated[int, Query(ge=0)] = 0) -> list[VariablePublic]:
    async with prefect_client(target) as client:
        response = await client.request("POST", "/variables/filter",
                                        json={"limit": limit, "offset": offset})
    return [VariablePublic(key=v.name, value=v.value)
            for v in Variable.model_validate_list(response.json())]


@router.get("/{key}", response_model=VariablePublic, responses=ERRORS)
async def get_variable(key: str, target: TargetDep) -> VariablePublic:
    async with prefect_client(target) as client:
        variable = await client.read_variable_by_name(_key(key))
    if variable is None:
        raise NotFoundError(f"variable '{key}' not found", details={"key": key})
    return VariablePublic(key=variable.name, value=variable.value)


@router.put("/{key}", response_model=VariablePublic, responses=ERRORS)
async def put_variable(key: str, body: VariableBody, target: TargetDep) -> VariablePublic:
    """Create or replace a variable (last writer wins)."""
    problem = value_problem(body.value)
    if problem:
        raise InvalidRequestError("value", problem)
    async with prefect_client(target) as client:
        await variables.put(client, _key(key), body.value)
    return VariablePublic(key=key, value=body.value)


@router.delete("/{key}", status_code=204, responses=ERRORS)
async def delete_variable(key: str, target: TargetDep) -> Response:
    async with prefect_client(target) as client:
        try:
            await client.delete_variable_by_name(_key(key))
        except ObjectNotFound as exc:
            raise NotFoundError(f"variable '{key}' not found", details={"key": key}) from exc
    return Response(status_code=204)
