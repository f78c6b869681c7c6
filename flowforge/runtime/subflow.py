"""The `workflow` job: start another workflow's deployment as a sub-run, wait, take its outputs.

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

from flowforge.errors import JobError
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

    from flowforge.runtime.prefect_client import sync_client

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
        return summary.get("outputs") if summary else None
    failed = [f"{j['name']}: {j.get('error') or j['state']}" for j in (summary or {}).get("jobs", [])
              if j.get("state") in ("FAILED", "CANCELLED")]
    message = "; ".join(failed)[:500] or (flow_run.state.message if flow_run.state else "") or ""
    raise JobError(f"workflow '{workflow}' run {run_id} ended {state}"
                   + (f": {message}" if message else ""))


def run(workflow: str, inputs: dict[str, Any], *, wait: bool, trigger: dict[str, Any],
        idempotency_key: str, timeout: float | None, stopping: threading.Event,
        log: Callable[[str], None]) -> Any:
    """Start `workflow` with `inputs`; with `wait` return its outputs, else `{"run_id"}`."""
    run_id = start(workflow, {**inputs, "flowforge_trigger": trigger}, idempotency_key)
    log(f"started workflow '{workflow}' as sub-run {run_id}")
    if not wait:
        return {"run_id": str(run_id)}
    return wait_for(workflow, run_id, timeout, stopping, log)


__all__ = ["deployment_for", "run", "start", "wait_for"]
