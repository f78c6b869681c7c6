"""Work pools: created with their worker type's default template unless they exist.

A pool is created once with FlowForge's defaults and never overwritten (its template is the
operator's to edit); `pool_drift` says when one lacks what FlowForge would set.
"""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound


async def ensure_work_pool(client: PrefectClient, name: str, pool_type: str = "process",
                           defaults: dict[str, Any] | None = None) -> bool:
    """Create work pool `name` with its worker type's default job template unless it exists.

    Part of converging: a Prefect server that was wiped or replaced has no pool, and a
    deployment on a missing pool is refused. `defaults` overrides the template's job-variable
    defaults (e.g. a docker pool's image). Returns True when it created the pool.
    """
    try:
        await client.read_work_pool(name)
        return False
    except ObjectNotFound:
        pass
    template: dict[str, Any] = {}
    if pool_type == "process":
        from prefect.workers.process import ProcessWorker  # the worker module is heavy

        template = ProcessWorker.get_default_base_job_template()
    elif pool_type == "docker":
        # Without the worker's own template the pool refuses custom images.
        from prefect_docker.worker import DockerWorker  # only `up --docker` pays for it

        template = DockerWorker.get_default_base_job_template()
    for key, value in (defaults or {}).items():
        template["variables"]["properties"][key]["default"] = value
    try:
        await client.create_work_pool(
            WorkPoolCreate(name=name, type=pool_type, base_job_template=template))
    except ObjectAlreadyExists:
        return False
    return True


async def pool_drift(client: PrefectClient, name: str, defaults: dict[str, Any],
                     keys: tuple[str, ...]) -> list[str]:
    """The job variables among `keys` whose default in pool `name` is not `defaults`' value.

    A pool is created once with FlowForge's defaults and never overwritten (its template is
    the operator's to edit), so one made by an older FlowForge keeps the older defaults.
    """
    pool = await client.read_work_pool(name)
    properties = (pool.base_job_template or {}).get("variables", {}).get("properties", {})
    return [key for key in keys if properties.get(key, {}).get("default") != defaults.get(key)]


__all__ = ["ensure_work_pool", "pool_drift"]
