"""Workflow variables as a job sees them: read before it starts, its writes applied after.

Prefect variables keep workers independent of FlowForge: a job reads them before it starts
(`variables.json`) and its `set_variable` calls are applied after it ends, straight to Prefect,
under the rules of `flowforge.core.variables`; every write lands and the last one per key wins
(`flowforge.connectors.prefect_store.put_variable`).
"""

from __future__ import annotations

import asyncio
from typing import Any, Final

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import Variable

from flowforge.connectors.prefect_store import put_variable
from flowforge.core.errors import ConflictError, JobError
from flowforge.core.names import DEFAULT_NAMESPACE, split_stored_name, stored_name
from flowforge.core.variables import name_problem, value_problem
from flowforge.runtime.prefect_client import sync_client

_PAGE: Final = 200


def read_all(namespace: str = DEFAULT_NAMESPACE) -> dict[str, Any]:
    """Every variable of `namespace`, by the keys jobs use, page by page (the server answers at
    most a page at a time); FlowForge's own and other namespaces' are left out."""
    out: dict[str, Any] = {}
    with sync_client() as client:
        offset = 0
        while True:
            response = client.request("POST", "/variables/filter",
                                      json={"limit": _PAGE, "offset": offset})
            page = Variable.model_validate_list(response.json())
            for variable in page:
                found = split_stored_name(variable.name)
                if found is not None and found[0] == namespace:
                    out[found[1]] = variable.value
            if len(page) < _PAGE:
                return out
            offset += _PAGE


def write(changes: dict[str, Any], namespace: str = DEFAULT_NAMESPACE) -> None:
    """Apply a job's `set_variable` calls in its namespace; last writer wins per key, no write
    is lost."""
    for key, value in changes.items():
        problem = name_problem(key) or value_problem(value)
        if problem:
            raise JobError(f"could not set variable '{key[:80]}': {problem}")

    async def apply() -> None:  # the job runs in a worker thread: no event loop is running
        async with get_client() as client:
            for key, value in changes.items():
                try:
                    await put_variable(client, stored_name(namespace, key), value)
                except ConflictError:
                    raise JobError(f"could not set variable '{key}': it kept changing "
                                   "under us") from None
                except Exception as exc:
                    raise JobError(f"could not set variable '{key}': {exc}") from exc

    asyncio.run(apply())


__all__ = ["read_all", "write"]
