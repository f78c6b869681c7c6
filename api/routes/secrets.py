"""/secrets: write-only values stored as Prefect `Secret` blocks.

A secret is set with `PUT /secrets/{name}` and never read back through the API: `GET /secrets`
lists names only. Jobs reference secrets by name in templates (`{{ secrets.name }}`) and load
them from Prefect when they run, so a secret's value is in neither the FlowForge database nor
the generated flows. A secret whose value is one or more apprise URLs is also a stored
notification target: a message job's `to: <name>`.
"""

from __future__ import annotations

from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Query, Response
from prefect.blocks.system import Secret
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, Field

from api.deps import TargetDep
from api.schemas import ErrorBody
from flowforge.errors import InvalidRequestError, NotFoundError
from flowforge.prefect_sync import prefect_client
from flowforge.runtime.secrets import SECRET_NAME_RE
from flowforge.runtime.ssh_servers import SECRET_PREFIX as SSH_SECRET_PREFIX

router = APIRouter(prefix="/secrets", tags=["secrets"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody}, 422: {"model": ErrorBody}, 503: {"model": ErrorBody}}
MAX_SECRET_CHARS = 64 * 1024
BLOCK_TYPE = "secret"


class SecretBody(BaseModel):
    value: str = Field(..., min_length=1, max_length=MAX_SECRET_CHARS)


class SecretName(BaseModel):
    name: str


def _name(name: str) -> str:
    if not SECRET_NAME_RE.match(name):
        raise InvalidRequestError("name", f"secret name '{name[:80]}' must be 1-100 lowercase "
                                  "letters, digits and '-', starting with a letter or digit")
    if name.startswith(SSH_SECRET_PREFIX):
        raise InvalidRequestError("name", f"names starting with '{SSH_SECRET_PREFIX}' hold SSH "
                                  "server credentials; use /servers")
    return name


@router.get("", response_model=list[SecretName], responses=ERRORS)
async def list_secrets(target: TargetDep, limit: Annotated[int, Query(ge=1, le=200)] = 200,
                       offset: Annotated[int, Query(ge=0)] = 0) -> list[SecretName]:
    """Names only: values are write-only."""
    async with prefect_client(target) as client:
        try:
            documents = await client.read_block_documents_by_type(
                BLOCK_TYPE, offset=offset, limit=limit, include_secrets=False)
        except httpx.HTTPStatusError as exc:  # no Secret block type registered on this server
            if exc.response.status_code == 404:
                return []
            raise
    return [SecretName(name=d.name) for d in documents
            if d.name and not d.is_anonymous and not d.name.startswith(SSH_SECRET_PREFIX)]


@router.put("/{name}", response_model=SecretName, responses=ERRORS)
async def put_secret(name: str, body: SecretBody, target: TargetDep) -> SecretName:
    """Create or replace a secret; the answer never carries the value."""
    async with prefect_client(target) as client:
        await Secret(value=body.value).asave(_name(name), overwrite=True, client=client)
    return SecretName(name=name)


@router.delete("/{name}", status_code=204, responses=ERRORS)
async def delete_secret(name: str, target: TargetDep) -> Response:
    async with prefect_client(target) as client:
        try:
            document = await client.read_block_document_by_name(
                _name(name), BLOCK_TYPE, include_secrets=False)
            await client.delete_block_document(document.id)
        except ObjectNotFound as exc:
            raise NotFoundError(f"secret '{name}' not found", details={"name": name}) from exc
    return Response(status_code=204)
