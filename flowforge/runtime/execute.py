"""One job of a run, from its task starting to its record: reuse, gate, run, record, fail.

The gate decides whether the job runs (every upstream is done by then: the generated flow
waits for them with `wait_for=[allow_failure(...)]`), fail-fast may skip it, a repair run may
reuse it; otherwise it runs once, per item (`for_each`) or until its `until` holds, holding its
concurrency limits, and its kind's runtime module does the work. A job that does not run ends
in a completed Prefect state named `Skipped` or `UpstreamFailed`, so the run graph stays
readable; a failing job raises, so Prefect's own retries apply and the task is red in the UI.
"""

from __future__ import annotations

from typing import Any

from prefect import get_run_logger
from prefect.context import TaskRunContext
from prefect.states import Completed, State

from flowforge.core import gate
from flowforge.core.errors import JobError
from flowforge.core.jobs import JobBase
from flowforge.core.repair import REUSED_FIELDS
from flowforge.core.wire import TERMINAL, JobRecord, JobState
from flowforge.runtime import foreach, kinds, limits, loops
from flowforge.runtime.joblog import job_log
from flowforge.runtime.kinds.base import JobContext, KindResult
from flowforge.runtime.ledger import now
from flowforge.runtime.scope import RunScope
from flowforge.runtime.secrets import load_secrets


def execute(scope: RunScope, name: str) -> Any:
    """The body of a job's task run: its record, or a completed state for a job not run."""
    job = scope.jobs[name]
    ctx = TaskRunContext.get()
    attempt = ctx.task_run.run_count if ctx else 1
    ledger = scope.ledger
    if name in scope.reused:
        return _reuse(scope, name)
    ledger.update(name, state=JobState.RUNNING, started_at=now(), ended_at=None, error=None,
                  attempts=attempt)
    upstream = {n.job: ledger.record(n.job) for n in scope.needs[name]}
    if scope.stop.fail_fast_by is not None:
        record = ledger.update(name, state=JobState.SKIPPED, reason=scope.stop.reason,
                               ended_at=now())
        return Completed(name="Skipped", message=scope.stop.reason, data=_data(record))
    decision = gate.decide(
        job.run_if,
        [gate.Edge(n.job, n.on) for n in scope.needs[name]],
        {u: gate.Upstream(u, r.state if r.state in TERMINAL else JobState.FAILED, r.condition)
         for u, r in upstream.items()},
    )
    if not decision.run:
        assert decision.state is not None
        record = ledger.update(name, state=decision.state, reason=decision.reason,
                               ended_at=now())
        state_name = "Skipped" if decision.state == JobState.SKIPPED else "UpstreamFailed"
        get_run_logger().info("not run (%s): %s", decision.state, decision.reason)
        return Completed(name=state_name, message=decision.reason, data=_data(record))
    try:
        output, condition = run_controlled(scope, job, upstream, attempt)
    except Exception as exc:  # a bug or an unexpected third-party error: still a job failure
        error = exc.message if isinstance(exc, JobError) else f"{type(exc).__name__}: {exc}"
        _failed(scope, name, error)
        if ctx is None or attempt > ctx.task.retries:  # Prefect will not try again
            _trip_fail_fast(scope, job)
        masked = scope.masker.mask(error)
        if masked != error:  # Prefect logs and stores the exception: it must not hold a secret
            raise JobError(masked) from None
        raise
    return _data(ledger.update(name, state=JobState.COMPLETED, output=output,
                               condition=condition, ended_at=now()))


def _data(record: JobRecord) -> dict[str, Any]:
    return record.model_dump(mode="json")


def _failed(scope: RunScope, name: str, error: str) -> None:
    # A job killed because the run is being stopped was cancelled, not failed: its process
    # dies of the stop's own SIGTERM, which must not read as the job's fault.
    if scope.stop.is_set():
        scope.ledger.update(name, state=JobState.CANCELLED, error=error, ended_at=now(),
                            reason=scope.stop.reason)
    else:
        scope.ledger.update(name, state=JobState.FAILED, error=error, ended_at=now())


def _trip_fail_fast(scope: RunScope, job: JobBase) -> None:
    """`settings.fail_fast`: the first failure cancels running jobs and skips the rest."""
    if not scope.spec.settings.fail_fast or job.continue_on_error:
        return
    if scope.stop.trip(job.name):
        scope.kill_all_soon()


def _reuse(scope: RunScope, name: str) -> State:
    """A repair run's completed job: its original record, marked reused, not run again."""
    original = scope.reused[name]
    record = scope.ledger.update(name, **{k: original.get(k) for k in REUSED_FIELDS},
                                 reused=True)
    get_run_logger().info("reused from the repaired run (not run again)")
    return Completed(name="Reused", message="reused from the repaired run", data=_data(record))


def run_controlled(scope: RunScope, job: JobBase, upstream: dict[str, JobRecord],
                   attempt: int) -> KindResult:
    """Run a job once, per item (`for_each`) or until its `until` holds."""
    if job.for_each is not None:
        return foreach.run(scope, job, upstream, scope.item_tasks[job.name], run_once), None
    with limits.hold(job.concurrency):
        if job.until is not None:
            return loops.poll(scope, job, upstream, attempt, run_once)
        return run_once(scope, job, upstream, attempt)


def run_once(scope: RunScope, job: JobBase, upstream: dict[str, JobRecord],
             attempt: int) -> KindResult:
    """One run of the job's kind, with its secrets loaded and its templates' context built."""
    item, in_item = foreach.current_item(), foreach.in_item()
    context = scope.ledger.context(item)
    names = job.secret_names()
    if names:
        context["secrets"] = load_secrets(names, scope.spec.ns)
        scope.masker.add(context["secrets"].values())
    ctx = JobContext(scope=scope, job=job, upstream=upstream, attempt=attempt, context=context,
                     log=job_log(scope.masker), item=item, in_item=in_item)
    return kinds.runner(job.type)(ctx)


__all__ = ["execute", "run_controlled", "run_once"]
