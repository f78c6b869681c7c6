"""What FlowForge keeps in Prefect besides deployments: secrets, variables, limits, events.

Prefect is the only store of each, so workers read them without FlowForge. Names here are as
Prefect holds them; which namespace a name belongs to, and which names FlowForge keeps to
itself, is `flowforge.core.names`' business and the caller's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
from prefect.blocks.system import Secret
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import (
    GlobalConcurrencyLimitCreate,
    GlobalConcurrencyLimitUpdate,
)
from prefect.client.schemas.objects import Variable, WorkerStatus
from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse
from prefect.events import Event
from prefect.events.clients import PrefectEventsClient
from prefect.exceptions import ObjectNotFound
from websockets.exceptions import WebSocketException

from flowforge.connectors.prefect_store import PAGE, put_variable
from flowforge.connectors.servers import PrefectDirectory
from flowforge.controlplane.client import PrefectTarget, prefect_client
from flowforge.core.errors import NotFoundError, PrefectUnavailableError

SECRET_BLOCK_TYPE = "secret"


# -- secrets ----------------------------------------------------------------------------------


async def iter_secret_names(client: PrefectClient) -> AsyncIterator[str]:
    """Every named secret's name, page by page (values are write-only)."""
    offset = 0
    while True:
        try:
            documents = await client.read_block_documents_by_type(
                SECRET_BLOCK_TYPE, offset=offset, limit=PAGE, include_secrets=False)
        except httpx.HTTPStatusError as exc:  # no Secret block type registered on this server
            if exc.response.status_code == 404:
                return
            raise
        for d in documents:
            if d.name and not d.is_anonymous:
                yield d.name
        if len(documents) < PAGE:
            return
        offset += PAGE


async def put_secret(client: PrefectClient, name: str, value: str) -> None:
    await Secret(value=value).asave(name, overwrite=True, client=client)


async def delete_secret(client: PrefectClient, name: str) -> None:
    try:
        document = await client.read_block_document_by_name(
            name, SECRET_BLOCK_TYPE, include_secrets=False)
        await client.delete_block_document(document.id)
    except ObjectNotFound as exc:
        raise NotFoundError(f"secret '{name}' not found", details={"name": name}) from exc


# -- variables --------------------------------------------------------------------------------


async def iter_variables(client: PrefectClient) -> AsyncIterator[Variable]:
    """Every variable, page by page."""
    offset = 0
    while True:
        response = await client.request("POST", "/variables/filter",
                                        json={"limit": PAGE, "offset": offset})
        page = Variable.model_validate_list(response.json())
        for variable in page:
            yield variable
        if len(page) < PAGE:
            return
        offset += PAGE


async def get_variable(client: PrefectClient, key: str) -> Any:
    variable = await client.read_variable_by_name(key)
    if variable is None:
        raise NotFoundError(f"variable '{key}' not found", details={"key": key})
    return variable.value


async def put(client: PrefectClient, key: str, value: Any) -> None:
    await put_variable(client, key, value)


async def delete_variable(client: PrefectClient, key: str) -> None:
    try:
        await client.delete_variable_by_name(key)
    except ObjectNotFound as exc:
        raise NotFoundError(f"variable '{key}' not found", details={"key": key}) from exc


# -- concurrency limits -----------------------------------------------------------------------


async def list_limits(client: PrefectClient, limit: int,
                      offset: int) -> list[GlobalConcurrencyLimitResponse]:
    return list(await client.read_global_concurrency_limits(limit=limit, offset=offset))


async def get_limit(client: PrefectClient, name: str) -> GlobalConcurrencyLimitResponse:
    try:
        return await client.read_global_concurrency_limit_by_name(name)
    except ObjectNotFound as exc:
        raise NotFoundError(f"concurrency limit '{name}' not found",
                            details={"name": name}) from exc


async def put_limit(client: PrefectClient, name: str, slots: int) -> GlobalConcurrencyLimitResponse:
    """Create the limit or change its number of slots."""
    try:
        await client.update_global_concurrency_limit(
            name, GlobalConcurrencyLimitUpdate(limit=slots))
    except ObjectNotFound:
        await client.create_global_concurrency_limit(
            GlobalConcurrencyLimitCreate(name=name, limit=slots))
    return await client.read_global_concurrency_limit_by_name(name)


# -- events, health, servers --------------------------------------------------------------------


async def emit_event(target: PrefectTarget, event: str, resource: dict[str, str],
                     payload: dict[str, Any]) -> str:
    """Emit a Prefect event (what event triggers, Prefect automations, react to); its id."""
    emitted = Event(event=event, resource=resource, payload=payload)
    try:
        async with PrefectEventsClient(api_url=target.api_url, reconnection_attempts=1) as client:
            await client.emit(emitted)
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise PrefectUnavailableError(f"cannot emit the event to Prefect: {exc}") from exc
    return str(emitted.id)


async def health(client: PrefectClient, work_pool: str) -> dict[str, str]:
    """`{"prefect", "worker"}`: "ok", or what is wrong."""
    checks: dict[str, str] = {}
    response = await client._client.get("/health")
    checks["prefect"] = "ok" if response.status_code == 200 else f"status {response.status_code}"
    workers = await client.read_workers_for_work_pool(work_pool)
    online = [w.name for w in workers if w.status == WorkerStatus.ONLINE]
    checks["worker"] = "ok" if online else f"no online worker in pool '{work_pool}'"
    return checks


def server_directory(target: PrefectTarget) -> PrefectDirectory:
    """SSH server records as the control plane reads and writes them."""
    return PrefectDirectory(lambda: prefect_client(target))


__all__ = [
    "delete_secret",
    "delete_variable",
    "emit_event",
    "get_limit",
    "get_variable",
    "health",
    "iter_secret_names",
    "iter_variables",
    "list_limits",
    "put",
    "put_limit",
    "put_secret",
    "server_directory",
]
