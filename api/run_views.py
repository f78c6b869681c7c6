"""Runs as FlowForge shows them, read from Prefect.

A run is a Prefect flow run; its per-job detail comes from the `flowforge-run` artifact the flow
itself publishes (see flowforge.runtime.publisher), which is complete the moment the flow run
is terminal. Prefect's task-run rows are not used for job states: they trail under load.
"""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterType,
    DeploymentFilter,
    DeploymentFilterId,
    LogFilter,
    LogFilterFlowRunId,
    TaskRunFilter,
    TaskRunFilterId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.sorting import FlowRunSort, LogSort
from prefect.exceptions import ObjectNotFound

from api.schemas import JobRunPublic, LogLine, Progress, RunPublic, RunSummary
from flowforge.errors import NotFoundError
from flowforge.runtime.publisher import ARTIFACT_TYPE
from flowforge.spec import Workflow, topological_order

_RUN_STATES = {
    "SCHEDULED": "PENDING", "PENDING": "PENDING", "PAUSED": "PENDING", "RUNNING": "RUNNING",
    "CANCELLING": "RUNNING", "COMPLETED": "COMPLETED", "FAILED": "FAILED", "CRASHED": "FAILED",
    "CANCELLED": "CANCELLED",
}


def run_state(flow_run: FlowRun) -> str:
    return _RUN_STATES.get(flow_run.state_type.value if flow_run.state_type else "", "PENDING")


def ui_url(base: str, run_id: str) -> str:
    return f"{base.rstrip('/')}/runs/flow-run/{run_id}"


async def read_flow_run(client: PrefectClient, run_id: str) -> FlowRun:
    try:
        return await client.read_flow_run(UUID(run_id))
    except (ValueError, ObjectNotFound) as exc:
        raise NotFoundError(f"run '{run_id}' not found", details={"run_id": run_id}) from exc


async def read_summary(client: PrefectClient, run_id: UUID) -> dict[str, Any] | None:
    artifacts = await client.read_artifacts(
        artifact_filter=ArtifactFilter(
            type=ArtifactFilterType(any_=[ARTIFACT_TYPE]),
            flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]),
        ),
        limit=1,
    )
    data = artifacts[0].data if artifacts else None
    return data if isinstance(data, dict) else None


def build_run(flow_run: FlowRun, workflow: str, spec: Workflow | None,
              summary: dict[str, Any] | None, ui_base: str) -> RunPublic:
    state = run_state(flow_run)
    params = dict(flow_run.parameters or {})
    trigger = params.pop("flowforge_trigger", None)
    params.pop("flowforge_repair", None)
    if summary is not None:
        jobs = [dict(j) for j in summary["jobs"]]
        inputs, outputs = summary.get("inputs", params), summary.get("outputs")
        trigger = summary.get("trigger", trigger)
    else:
        order = topological_order(spec) if spec else []
        jobs = [{"name": n, "state": "PENDING"} for n in order]
        inputs, outputs = params, None
    if state in ("COMPLETED", "FAILED", "CANCELLED"):
        # The flow ended without publishing a final summary (cancelled, crashed): jobs it had
        # not finished did not finish.
        end_state = "CANCELLED" if state == "CANCELLED" else "FAILED"
        message = (flow_run.state.message if flow_run.state else None) or state.lower()
        for job in jobs:
            if job["state"] in ("PENDING", "RUNNING"):
                job["state"] = end_state
                job["reason"] = job.get("reason") or f"run ended before this job finished: {message}"
    done = sum(j["state"] not in ("PENDING", "RUNNING") for j in jobs)
    return RunPublic(
        id=str(flow_run.id), workflow=workflow, state=state,
        prefect_state=flow_run.state_name, started_at=flow_run.start_time,
        ended_at=flow_run.end_time if state in ("COMPLETED", "FAILED", "CANCELLED") else None,
        inputs=inputs or {}, outputs=outputs, trigger=trigger,
        progress=Progress(done=done, total=len(jobs)),
        jobs=[JobRunPublic(**{k: j.get(k) for k in JobRunPublic.model_fields if k in j})
              for j in jobs],
        prefect_ui_url=ui_url(ui_base, str(flow_run.id)),
    )


async def list_runs(client: PrefectClient, deployment_id: str, workflow: str,
                    limit: int, offset: int) -> list[RunSummary]:
    runs = await client.read_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[UUID(deployment_id)])),
        sort=FlowRunSort.EXPECTED_START_TIME_DESC, limit=limit, offset=offset,
    )
    return [RunSummary(id=str(r.id), workflow=workflow, state=run_state(r),
                       prefect_state=r.state_name, created_at=r.created,
                       started_at=r.start_time, ended_at=r.end_time) for r in runs]


async def read_logs(client: PrefectClient, run_id: UUID, limit: int, offset: int) -> list[LogLine]:
    logs = await client.read_logs(
        log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id])),
        limit=limit, offset=offset, sort=LogSort.TIMESTAMP_ASC,
    )
    # The task runs of this page's lines only, by id: reading the run's task runs answered
    # the first 200, so past that (a large for-each) lines had no job. A page has at most
    # 200 lines (the route's limit), so one read does.
    task_ids = list({log.task_run_id for log in logs if log.task_run_id})
    names: dict[UUID, str] = {}
    if task_ids:
        task_runs = await client.read_task_runs(
            task_run_filter=TaskRunFilter(id=TaskRunFilterId(any_=task_ids)), limit=len(task_ids))
        names = {t.id: t.name for t in task_runs}
    return [LogLine(timestamp=log.timestamp, level=_level(log.level),
                    job=names.get(log.task_run_id) if log.task_run_id else None,
                    message=log.message) for log in logs]


def _level(level: int) -> str:
    return {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}.get(level, str(level))
