"""Workflow jobs: another workflow's deployment as a sub-run; wait, and take its outputs.

The sub-run is created with Prefect's own `run_deployment(..., as_subflow=True)` from inside
the job's task, so Prefect links it under that task run: the Prefect UI draws it as a subflow
of the parent, and Prefect's cancellation service cancels it when the parent run is cancelled.
The worker runs it in its own process like any run (the process worker has no concurrency cap
by default, so a parent waiting for a child cannot starve it).

`run_deployment` would wait by polling every 5 s; we ask it to return at once (`timeout=0`) and
poll ourselves every `POLL_SECONDS`, so a short child does not cost the parent 5 s, and so the
job's own `timeout` can cancel the child. The child's result is read from the `flowforge-run`
artifact it publishes before it ends (its state data is not persisted), exactly as the API
reads a run: the child's `outputs` become this job's output, its failure this job's failure.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any, Final
from uuid import UUID

from flowforge.core.errors import JobError
from flowforge.core.jobs import WorkflowJob
from flowforge.core.wire import JobState
from flowforge.runtime.kinds.base import JobContext, KindResult
from flowforge.runtime.prefect_client import sync_client
from flowforge.runtime.publisher import read_run_summary

POLL_SECONDS: Final = 0.5


def deployment_for(workflow: str) -> str:
    """The deployment FlowForge creates for a workflow: flow and deployment share its name."""
    return f"{workflow}/{workflow}"


def start(workflow: str, parameters: dict[str, Any], idempotency_key: str) -> UUID:
    """Create the sub-run, linked to the calling task run as a subflow; returns its id."""
    from prefect.deployments import run_deployment
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        start_run: Any = run_deployment  # `_sync=True`: the blocking variant, in this thread
        flow_run = start_run(
            deployment_for(workflow), parameters=parameters, timeout=0, as_subflow=True,
            idempotency_key=idempotency_key, tags=["flowforge"], _sync=True)
    except ObjectNotFound as exc:
        raise JobError(f"workflow '{workflow}' is not deployed (does it exist?)") from exc
    except PrefectHTTPStatusError as exc:
        detail = exc.response.text[:300]
        raise JobError(f"could not start workflow '{workflow}': "
                       f"{exc.response.status_code} {detail}") from exc
    return UUID(str(flow_run.id))


def wait_for(workflow: str, run_id: UUID, timeout: float | None, stopping: threading.Event,
             log: Callable[[str], None]) -> Any:
    """Wait for the sub-run to end; return its outputs or raise `JobError` with why it failed."""
    from prefect.client.schemas.objects import StateType
    from prefect.states import State

    deadline = None if timeout is None else time.monotonic() + timeout
    with sync_client() as client:
        while True:
            flow_run = client.read_flow_run(run_id)
            if flow_run.state is not None and flow_run.state.is_final():
                break
            if stopping.is_set() or (deadline is not None and time.monotonic() >= deadline):
                # A run no worker holds yet is cancelled outright; a started one is asked to
                # stop (CANCELLING), so its worker kills the process and every job in it.
                waiting = flow_run.state_type in (StateType.SCHEDULED, StateType.PAUSED)
                client.set_flow_run_state(
                    run_id, State(type=StateType.CANCELLED if waiting else StateType.CANCELLING,
                                  message="cancelled by the calling workflow job"), force=True)
                why = "the calling run was stopped" if stopping.is_set() else \
                    f"timed out after {timeout:g}s"
                raise JobError(f"workflow '{workflow}' run {run_id}: {why}; sub-run cancelled")
            time.sleep(POLL_SECONDS)
        summary = read_run_summary(client, run_id)
    state = flow_run.state.type.value if flow_run.state else "UNKNOWN"
    log(f"sub-run {run_id} of workflow '{workflow}' ended {state}")
    if state == "COMPLETED":
        return summary.outputs if summary else None
    failed = [f"{j.name}: {j.error or j.state}" for j in (summary.jobs if summary else [])
              if j.state in (JobState.FAILED, JobState.CANCELLED)]
    message = "; ".join(failed)[:500] or (flow_run.state.message if flow_run.state else "") or ""
    raise JobError(f"workflow '{workflow}' run {run_id} ended {state}"
                   + (f": {message}" if message else ""))


def run(ctx: JobContext) -> KindResult:
    job = ctx.job
    assert isinstance(job, WorkflowJob) and job.workflow is not None
    scope = ctx.scope
    inputs = ctx.render("inputs", job.inputs or {})
    trigger = {"type": "workflow", "parent_run_id": scope.flow_run_id,
               "parent_workflow": scope.spec.name, "job": job.name}
    run_id = start(job.workflow, {**inputs, "flowforge_trigger": trigger},
                   # one sub-run per attempt: a retried job starts a new one, a replay does not
                   f"workflow:{scope.flow_run_id}:{job.name}:{ctx.attempt}")
    ctx.info(f"started workflow '{job.workflow}' as sub-run {run_id}")
    if job.wait is False:
        return {"run_id": str(run_id)}, None
    return wait_for(job.workflow, run_id, job.timeout, scope.stop.event, ctx.info), None


__all__ = ["deployment_for", "run", "start", "wait_for"]
