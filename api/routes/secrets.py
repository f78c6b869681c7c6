"""/secrets: write-only values stored as Prefect `Secret` blocks.

A secret is set with `PUT /secrets/{name}` and never read back through the API: `GET /secrets`
lists names only. Jobs reference secrets by name in templates (`{{ secrets.name }}`) and load
them from Prefect when they run, so a secret's value is in neither the FlowForge database nor
the generated flows. A secret whose value is one or more apprise URLs is also a stored
notification target: a message job's `to: <name>`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import Admin, Reader, TargetDep
from api.schemas.common import errors
from api.schemas.store import SecretBody, SecretName
from api.services import store

Namespace = Annotated[str, Query(max_length=63, description="the namespace it belongs to")]
router = APIRouter(prefix="/secrets", tags=["secrets"])
ERRORS = errors(404, 422, 503)


@router.get("", response_model=list[SecretName], responses=ERRORS)
async def list_secrets(target: TargetDep, who: Reader,
                       limit: Annotated[int, Query(ge=1, le=200)] = 200,
                       offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
                       namespace: Namespace = "default") -> list[SecretName]:
    """Names only: values are write-only."""
    return await store.list_secrets(target, who, namespace, limit, offset)


@router.put("/{name}", response_model=SecretName, responses=ERRORS)
async def put_secret(name: str, body: SecretBody, target: TargetDep, who: Admin,
                     namespace: Namespace = "default") -> SecretName:
    """Create or replace a secret; the answer never carries the value."""
    return await store.put_secret(target, who, namespace, name, body.value)


@router.delete("/{name}", status_code=204, responses=ERRORS)
async def delete_secret(name: str, target: TargetDep, who: Admin,
                        namespace: Namespace = "default") -> Response:
    await store.delete_secret(target, who, namespace, name)
    return Response(status_code=204)
