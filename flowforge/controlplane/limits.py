"""Run and job concurrency as Prefect objects, derived from a workflow by the sync.

* `settings.max_concurrent_runs` + `on_limit` is the deployment's own concurrency limit with
  Prefect's collision strategy (`queue` -> ENQUEUE, `cancel_new` -> CANCEL_NEW): Prefect holds
  the extra runs (or cancels them) before any worker starts them, so no FlowForge code sits on
  the run path.
* `concurrency: [gpu]` on a job names Prefect global concurrency limits, shared by every
  workflow on the server. Their size is an operator's choice, not one workflow's, so the sync
  creates a missing limit with one slot (the safe default: jobs holding it run one at a time,
  as Airflow's default pool would have them queue) and never changes an existing one; resize
  it in the Prefect UI, with `prefect gcl update`, or `PUT /concurrency-limits/{name}`.
"""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import ConcurrencyLimitStrategy, ConcurrencyOptions
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from flowforge.core.workflow import Workflow

DEFAULT_JOB_LIMIT = 1


def deployment_limit(wf: Workflow) -> dict[str, Any]:
    """The deployment fields for `max_concurrent_runs` (both None when unlimited)."""
    if wf.settings.max_concurrent_runs is None:
        return {"concurrency_limit": None, "concurrency_options": None}
    strategy = (ConcurrencyLimitStrategy.CANCEL_NEW if wf.settings.on_limit == "cancel_new"
                else ConcurrencyLimitStrategy.ENQUEUE)
    return {"concurrency_limit": wf.settings.max_concurrent_runs,
            "concurrency_options": ConcurrencyOptions(collision_strategy=strategy)}


def job_limit_names(wf: Workflow) -> list[str]:
    return sorted({name for job in wf.jobs for name in job.concurrency or []})


async def ensure_job_limits(client: PrefectClient, wf: Workflow) -> list[str]:
    """Create the global concurrency limits the workflow's jobs name; returns those created."""
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate

    created = []
    for name in job_limit_names(wf):
        try:
            await client.read_global_concurrency_limit_by_name(name)
            continue
        except ObjectNotFound:
            pass
        try:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(name=name, limit=DEFAULT_JOB_LIMIT))
            created.append(name)
        except ObjectAlreadyExists:  # another sync made it meanwhile
            pass
    return created


__all__ = ["DEFAULT_JOB_LIMIT", "deployment_limit", "ensure_job_limits", "job_limit_names"]
