"""Runs in Prefect: start one, read one with its published summary, list, logs, cancel.

A run is a Prefect flow run; its per-job detail comes from the `flowforge-run` artifact the
flow itself publishes (`flowforge.core.wire.RunSummary`), which is complete the moment the flow
run is terminal. Prefect's task-run rows are not used for job states: they trail under load.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterEndTime,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
    LogFilter,
    LogFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterId,
)
from prefect.client.schemas.objects import FlowRun, Log, StateType
from prefect.client.schemas.sorting import FlowRunSort, LogSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Crashed, State

from flowforge.core.errors import NotFoundError
from flowforge.core.wire import ARTIFACT_TYPE, RunState, RunSummary, read_summary

_RUN_STATES = {
    "SCHEDULED": RunState.PENDING, "PENDING": RunState.PENDING, "PAUSED": RunState.PENDING,
    "RUNNING": RunState.RUNNING, "CANCELLING": RunState.RUNNING,
    "COMPLETED": RunState.COMPLETED, "FAILED": RunState.FAILED, "CRASHED": RunState.FAILED,
    "CANCELLED": RunState.CANCELLED,
}
TAGS = ["flowforge"]


def run_state(flow_run: FlowRun) -> RunState:
    """The run's state as FlowForge shows it (Prefect's finer states folded)."""
    return _RUN_STATES.get(flow_run.state_type.value if flow_run.state_type else "",
                           RunState.PENDING)


def ui_url(base: str, run_id: str) -> str:
    return f"{base.rstrip('/')}/runs/flow-run/{run_id}"


async def create_run(client: PrefectClient, deployment_id: str, parameters: dict[str, Any],
                     idempotency_key: str, tags: list[str] | None = None) -> str:
    """A flow run of the deployment; the same idempotency key again answers the same run.

    `ObjectNotFound` when the deployment is gone (the caller re-syncs and tries again).
    """
    flow_run = await client.create_flow_run_from_deployment(
        UUID(deployment_id), parameters=parameters, idempotency_key=idempotency_key,
        tags=[*TAGS, *(tags or [])])
    return str(flow_run.id)


async def read_run(client: PrefectClient, run_id: str) -> FlowRun:
    try:
        return await client.read_flow_run(UUID(run_id))
    except (ValueError, ObjectNotFound) as exc:
        raise NotFoundError(f"run '{run_id}' not found", details={"run_id": run_id}) from exc


async def read_run_summary(client: PrefectClient, run_id: UUID) -> RunSummary | None:
    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(
            type=ArtifactFilterType(any_=[ARTIFACT_TYPE]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
        ),
        limit=1,
    )
    return read_summary(artifacts[0].data) if artifacts else None


async def flow_name(client: PrefectClient, flow_run: FlowRun) -> str:
    return (await client.read_flow(flow_run.flow_id)).name


async def list_runs(client: PrefectClient, deployment_id: str, limit: int,
                    offset: int) -> list[FlowRun]:
    return list(await client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[UUID(deployment_id)])),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit, offset=offset))


async def due_since(client: PrefectClient, since: datetime, until: datetime,
                    limit: int = 200) -> list[FlowRun]:
    """FlowForge's runs due (expected to start) after `since` and by `until`, oldest first.

    By expected start, not start time: that is set once, when the run is made, so a run
    cancelled before it started is seen too; Prefect's start-time filter falls back to it
    for such runs, but also matches the runs its scheduler makes hours ahead, which no
    schedule has fired yet (and which Prefect deletes if the schedule changes).
    """
    return list(await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            expected_start_time=FlowRunFilterExpectedStartTime(after_=since, before_=until),
            tags=FlowRunFilterTags(all_=TAGS)),
        sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=limit))


async def crashed_since(client: PrefectClient, since: datetime, limit: int) -> list[FlowRun]:
    """FlowForge's runs that ended Crashed after `since`, newest first."""
    return list(await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.CRASHED])),
            end_time=FlowRunFilterEndTime(after_=since),
            tags=FlowRunFilterTags(all_=TAGS)),
        sort=FlowRunSort.END_TIME_DESC, limit=limit))


async def read_logs(client: PrefectClient, run_id: UUID, limit: int,
                    offset: int) -> list[tuple[Log, str | None]]:
    """A page of the run's log lines, each with the name of the job (task run) it came from."""
    logs = await client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
        limit=limit, offset=offset, sort=LogSort.TIMESTAMP_ASC)
    # The task runs of this page's lines only, by id: reading the run's task runs answered
    # the first 200, so past that (a large for-each) lines had no job. A page has at most
    # 200 lines (the route's limit), so one read does.
    task_ids = list({log.task_run_id for log in logs if log.task_run_id})
    names: dict[UUID, str] = {}
    if task_ids:
        task_runs = await client.read_task_runs(
            task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=task_ids)), limit=len(task_ids))
        names = {t.id: t.name for t in task_runs}
    return [(log, names.get(log.task_run_id) if log.task_run_id else None) for log in logs]


async def cancel_run(client: PrefectClient, flow_run: FlowRun) -> StateType:
    """Ask Prefect to cancel: a run no worker holds yet is cancelled outright, a started one
    goes CANCELLING so its worker kills the process and every job in it."""
    if flow_run.state_type in (StateType.SCHEDULED, StateType.PAUSED):
        new_state: State[Any] = Cancelled(message="cancelled through FlowForge")
    else:
        new_state = State(type=StateType.CANCELLING, message="cancelled through FlowForge")
    await client.set_flow_run_state(flow_run.id, new_state, force=True)
    return new_state.type


async def mark_crashed(client: PrefectClient, run_id: str, reason: str) -> bool:
    """Crashed, with `reason`, unless the run had already ended otherwise (its own end is the
    truth). A run that crashed by itself gets the reason too: Prefect's engine ends itself
    when its worker's control channel closes, saying only "aborted by a termination signal"."""
    flow_run = await client.read_flow_run(UUID(run_id))
    state = flow_run.state
    if state is not None and state.is_final() and state.type != StateType.CRASHED:
        return False
    await client.set_flow_run_state(flow_run.id, Crashed(message=reason), force=True)
    return True


__all__ = [
    "TAGS",
    "cancel_run",
    "crashed_since",
    "create_run",
    "due_since",
    "flow_name",
    "list_runs",
    "mark_crashed",
    "read_logs",
    "read_run",
    "read_run_summary",
    "run_state",
    "ui_url",
]
