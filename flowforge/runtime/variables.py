"""Workflow variables: JSON values stored as Prefect variables, read and written by jobs.

Prefect variables keep workers independent of FlowForge: a job reads them before it starts
(`variables.json`) and its `set_variable` calls are applied after it ends, straight to Prefect.
Prefect's own `Variable.set` reads then creates, so two jobs creating the same new key at the
same moment would make one of them fail with a conflict; `write` retries that race as an
update, so every write lands and the last one per key wins.

The rules are Prefect's: names are lowercase letters, digits, `-` and `_` (at most 255), and a
value is at most 5,000 characters as JSON.
"""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any, Final

import httpx

from flowforge.errors import ConflictError, JobError

NAME_RE: Final = re.compile(r"^[a-z0-9_-]{1,255}$")
MAX_VALUE_CHARS: Final = 5000
_PAGE: Final = 200


def name_problem(key: str) -> str | None:
    if not NAME_RE.match(key):
        return (f"variable name '{key[:80]}' must be 1-255 lowercase letters, digits, '-' or '_'")
    return None


def value_problem(value: Any) -> str | None:
    try:
        size = len(json.dumps(value))
    except (TypeError, ValueError) as exc:
        return f"the value is not JSON: {exc}"
    if size > MAX_VALUE_CHARS:
        return f"the value is {size} characters as JSON; at most {MAX_VALUE_CHARS} are allowed"
    return None


def read_all() -> dict[str, Any]:
    """Every variable, page by page (the server answers at most a page at a time)."""
    from prefect.client.schemas.objects import Variable

    from flowforge.runtime.prefect_client import sync_client

    out: dict[str, Any] = {}
    with sync_client() as client:
        offset = 0
        while True:
            response = client.request("POST", "/variables/filter",
                                      json={"limit": _PAGE, "offset": offset})
            page = Variable.model_validate_list(response.json())
            out.update({v.name: v.value for v in page})
            if len(page) < _PAGE:
                return out
            offset += _PAGE


def write(changes: dict[str, Any]) -> None:
    """Apply a job's `set_variable` calls; last writer wins per key, no write is lost."""
    from prefect.client.orchestration import get_client

    for key, value in changes.items():
        problem = name_problem(key) or value_problem(value)
        if problem:
            raise JobError(f"could not set variable '{key[:80]}': {problem}")

    async def apply() -> None:  # the job runs in a worker thread: no event loop is running
        async with get_client() as client:
            for key, value in changes.items():
                try:
                    await put(client, key, value)
                except ConflictError:
                    raise JobError(f"could not set variable '{key}': it kept changing "
                                   "under us") from None
                except Exception as exc:
                    raise JobError(f"could not set variable '{key}': {exc}") from exc

    asyncio.run(apply())


async def put(client: Any, key: str, value: Any) -> None:
    """Create or replace one variable with an async Prefect client (last writer wins).

    `client` is a `PrefectClient`; typed loosely so this module imports Prefect lazily.
    A create racing another create for the same key turns into an update, so no write is lost.
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


__all__ = ["MAX_VALUE_CHARS", "NAME_RE", "name_problem", "put", "read_all", "value_problem",
           "write"]
