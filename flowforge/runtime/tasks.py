"""The Prefect tasks of a workflow: one per job, named after it, with the job's retry options.

Side-effecting jobs must never be served from Prefect's cache, hence NO_CACHE; results live in
the ledger, so nothing needs persisting either. A for-each job's retries belong to its items
(`item_task`), as they do with Prefect's map.
"""

from __future__ import annotations

from typing import Any

from prefect import Task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from flowforge.core.jobs import JobBase
from flowforge.core.workflow import Workflow
from flowforge.runtime.execute import execute
from flowforge.runtime.foreach import run_item
from flowforge.runtime.scope import RunScope


def _run_job(job: str) -> Any:
    return execute(RunScope.current(), job)


def prefect_retry_options(job: JobBase) -> dict[str, Any]:
    """The job's retries as Prefect task options (`backoff: exponential` -> Prefect's own
    `exponential_backoff`, `jitter` -> `retry_jitter_factor`); none for a kind that retries
    by itself."""
    if not job.prefect_retries:
        return {"retries": 0}
    delay: Any = job.retry_delay
    if job.backoff == "exponential":
        delay = exponential_backoff(backoff_factor=job.retry_delay or 1.0)(job.retries)
    return {"retries": job.retries, "retry_delay_seconds": delay,
            "retry_jitter_factor": job.jitter}


def job_tasks(spec: Workflow) -> dict[str, Task[..., Any]]:
    """One Prefect task per job; a for-each job's own task does not retry (its items do)."""
    base: Task[[str], Any] = Task(fn=_run_job, cache_policy=NO_CACHE, persist_result=False)
    return {
        job.name: base.with_options(
            name=job.name, task_run_name=job.name,
            **(prefect_retry_options(job) if job.for_each is None else {"retries": 0}))
        for job in spec.jobs
    }


def item_task(job: JobBase) -> Task[..., Any]:
    """The task one item of a for-each job runs as; its runs are named `job[index]`."""
    base: Task[..., Any] = Task(fn=run_item, cache_policy=NO_CACHE, persist_result=False)
    return base.with_options(name=job.name, task_run_name=job.name + "[{index}]",
                             **prefect_retry_options(job))


def item_tasks(spec: Workflow) -> dict[str, Task[..., Any]]:
    return {job.name: item_task(job) for job in spec.jobs if job.for_each is not None}


__all__ = ["item_task", "item_tasks", "job_tasks", "prefect_retry_options"]
