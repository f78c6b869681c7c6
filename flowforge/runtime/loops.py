"""`until` loops: run a job again every `interval` seconds until its condition holds.

The poll runs inside the job's one task run rather than as Prefect retries: a poll that has
not yet seen `done` is not a failure, and should neither show red in the UI nor use up the
retries that are there for real errors (a failing attempt still raises, and Prefect retries
the whole loop as configured). The wait is on the run's `stopping` event, so fail-fast and
cancellation end a long poll at once.
"""

from __future__ import annotations

from typing import Any

from flowforge.core import templates
from flowforge.core.errors import JobError
from flowforge.core.jobs import DEFAULT_INTERVAL, DEFAULT_MAX_ATTEMPTS, JobBase
from flowforge.core.wire import JobRecord
from flowforge.runtime.foreach import RunOnce
from flowforge.runtime.scope import RunScope


def poll(scope: RunScope, job: JobBase, upstream: dict[str, JobRecord], attempt: int,
         run_once: RunOnce) -> tuple[Any, bool | None]:
    """Run the job until `until` is true; `(output, condition)` of the attempt that made it."""
    assert job.until is not None  # guaranteed by the caller
    interval = DEFAULT_INTERVAL if job.interval is None else job.interval
    limit = job.max_attempts or DEFAULT_MAX_ATTEMPTS
    output: Any = None
    for k in range(1, limit + 1):
        output, condition = run_once(scope, job, upstream, attempt)
        scope.ledger.update(job.name, polls=k, output=output)
        context = {**scope.ledger.context(), "output": output, "attempt": k}
        try:
            done = templates.render(job.until, context)
        except templates.TemplateError as exc:
            raise JobError(f"job '{job.name}': until: {exc}") from exc
        if done:
            return output, condition
        if k < limit and scope.stop.event.wait(interval):
            raise JobError(f"job '{job.name}': the run was stopped while polling")
    raise JobError(f"job '{job.name}': until {job.until!r} still false after {limit} "
                   f"attempts ({interval:g} s apart); last output: "
                   f"{templates.to_env_value(output)[:500]}")


__all__ = ["poll"]
