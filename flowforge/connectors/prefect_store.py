"""Prefect variables as a small key-value store: create-or-replace and read by prefix.

Shared by the worker (a job's `set_variable`, a pinned host key, a breaker's state) and the
API (`PUT /variables/{key}`, server records). Prefect's own `Variable.set` reads then creates,
so two writers creating the same new key at once made one fail with a conflict; `put_variable`
turns that race into an update, so every write lands and the last one per key wins.
"""

from __future__ import annotations

from typing import Any, Final

import httpx

from flowforge.core.errors import ConflictError

PAGE: Final = 200


async def put_variable(client: Any, key: str, value: Any) -> None:
    """Create or replace one variable with an async Prefect client (last writer wins).

    `client` is a `PrefectClient`; typed loosely so this module imports Prefect lazily.
    """
    from prefect.client.schemas.actions import VariableCreate, VariableUpdate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    for _ in range(5):
        try:
            if await client.read_variable_by_name(key) is not None:
                await client.update_variable(VariableUpdate(name=key, value=value))
            else:
                await client.create_variable(VariableCreate(name=key, value=value))
            return
        except (ObjectAlreadyExists, ObjectNotFound):
            continue  # created or deleted concurrently: look again
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise
    raise ConflictError(f"variable '{key}' kept changing while it was being written; try again")


async def variables_by_prefix(client: Any, prefix: str) -> dict[str, Any]:
    """`{name without prefix: value}` of every variable named `prefix...`, page by page."""
    from prefect.client.schemas.objects import Variable

    out: dict[str, Any] = {}
    offset = 0
    while True:
        response = await client.request("POST", "/variables/filter", json={
            "variables": {"name": {"like_": f"{prefix}%"}}, "limit": PAGE, "offset": offset})
        page = Variable.model_validate_list(response.json())
        out.update({v.name.removeprefix(prefix): v.value for v in page
                    if v.name.startswith(prefix)})
        if len(page) < PAGE:
            return out
        offset += PAGE


__all__ = ["PAGE", "put_variable", "variables_by_prefix"]
