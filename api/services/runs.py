"""Runs: start one, read one (with per-job detail), list a workflow's, logs, cancel, repair,
re-run. Prefect holds the runs (`flowforge.controlplane.runs`); this module decides and shapes.
"""

from __future__ import annotations

import uuid
from typing import Any

from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth import Principal
from api.middleware import note
from api.schemas.runs import (
    CancelResult,
    JobRunPublic,
    LogLine,
    Progress,
    RepairCreated,
    RerunCreated,
    RunCreated,
    RunListItem,
    RunPublic,
)
from api.services import sync
from api.tables import WorkflowRow
from flowforge.controlplane import runs
from flowforge.controlplane.client import PrefectTarget, prefect_client
from flowforge.core import repair
from flowforge.core.errors import ConflictError, NotFoundError, PrefectUnavailableError
from flowforge.core.inputs import resolve_inputs
from flowforge.core.wire import JobRecord, JobState, RunState, RunSummary
from flowforge.core.workflow import Workflow, topological_order

RESERVED = ("flowforge_trigger", "flowforge_repair")
_LEVELS = {10: "DEBUG", 20: "INFO", 30: "WARNING", 40: "ERROR", 50: "CRITICAL"}


async def create_run(session: AsyncSession, row: WorkflowRow, target: PrefectTarget,
                     parameters: dict[str, Any], key: str) -> str:
    """A flow run of the workflow's deployment (synced first if need be); its id."""
    name = row.name
    if row.sync_status != "synced" or not row.deployment_id:
        row = await sync.sync_row(session, row, target, unless_synced=True)
        if row.sync_status != "synced" or not row.deployment_id:
            raise PrefectUnavailableError(
                f"workflow '{name}' is not deployed to Prefect yet: {row.sync_error}")
    async with prefect_client(target) as client:
        try:
            return await runs.create_run(client, row.deployment_id, parameters, key)
        except ObjectNotFound:
            # The deployment was removed behind our back: converge, then try once more.
            row = await sync.sync_row(session, row, target)
            return await runs.create_run(client, row.deployment_id or str(uuid.UUID(int=0)),
                                         parameters, key)


async def start(session: AsyncSession, target: PrefectTarget, row: WorkflowRow, ui_base: str,
                inputs: dict[str, Any], idempotency_key: str | None) -> RunCreated:
    resolved = resolve_inputs(sync.spec_of(row), inputs)
    note(target=f"workflow:{row.name}", namespace=row.namespace)
    key = f"manual:{idempotency_key or uuid.uuid4()}"
    trigger = {"id": None, "type": "manual", "idempotency_key": key}
    run_id = await create_run(session, row, target, {**resolved, "flowforge_trigger": trigger}, key)
    note(target=f"run:{run_id}")  # the row names the run it started
    return RunCreated(run_id=run_id, prefect_ui_url=runs.ui_url(ui_base, run_id))


async def _row_of(session: AsyncSession, flow_run: FlowRun) -> WorkflowRow | None:
    if flow_run.deployment_id is None:
        return None
    return (await session.exec(select(WorkflowRow).where(
        WorkflowRow.deployment_id == str(flow_run.deployment_id)))).first()


def _visible(flow_run: FlowRun, row: WorkflowRow | None, who: Principal | None) -> None:
    """"Not found" for a run of a workflow in a namespace `who` does not act in; a run whose
    workflow FlowForge no longer knows is visible to keys of every namespace only."""
    if who is not None and not (who.sees(row.namespace) if row is not None
                                else who.every_namespace):
        raise NotFoundError(f"run '{flow_run.id}' not found", details={"run_id": str(flow_run.id)})
    note(target=f"run:{flow_run.id}", namespace=row.namespace if row is not None else None)


async def finished_run(session: AsyncSession, target: PrefectTarget, run_id: str,
                       who: Principal | None = None,
                       ) -> tuple[FlowRun, WorkflowRow, RunSummary | None]:
    """A terminal run, the stored workflow it belongs to and its published summary."""
    async with prefect_client(target) as client:
        flow_run = await runs.read_run(client, run_id)
        row = await _row_of(session, flow_run)
        _visible(flow_run, row, who)
        summary = await runs.read_run_summary(client, flow_run.id)
    if flow_run.state is None or not flow_run.state.is_final():
        raise ConflictError(f"run '{run_id}' has not ended ({runs.run_state(flow_run)}); "
                            "cancel it or wait", details={"run_id": run_id})
    if row is None or row.deleted:
        raise NotFoundError(f"the workflow of run '{run_id}' no longer exists",
                            details={"run_id": run_id})
    return flow_run, row, summary


def original_inputs(flow_run: FlowRun) -> dict[str, Any]:
    return {k: v for k, v in (flow_run.parameters or {}).items() if k not in RESERVED}


async def repair_run(session: AsyncSession, target: PrefectTarget, run_id: str, ui_base: str,
                     extra: list[str], idempotency_key: str | None,
                     who: Principal | None = None,
                     trigger_extra: dict[str, Any] | None = None) -> RepairCreated:
    flow_run, row, summary = await finished_run(session, target, run_id, who)
    if summary is None:
        raise ConflictError(f"run '{run_id}' published no job summary (it never started); "
                            "use POST /runs/{id}/rerun", details={"run_id": run_id})
    rerun, reused = repair.plan(sync.spec_of(row), summary, extra)
    if not rerun:
        raise ConflictError(f"every job of run '{run_id}' completed; nothing to repair "
                            "(name jobs to re-run in 'jobs', or use POST /runs/{id}/rerun)",
                            details={"run_id": run_id})
    key = f"repair:{run_id}:{idempotency_key or uuid.uuid4()}"
    trigger = {"id": None, "type": "repair", "repair_of": run_id, "idempotency_key": key,
               **(trigger_extra or {})}
    new_id = await create_run(session, row, target, {
        **original_inputs(flow_run), "flowforge_trigger": trigger, "flowforge_repair": reused,
    }, key)
    return RepairCreated(run_id=new_id, prefect_ui_url=runs.ui_url(ui_base, new_id),
                         repair_of=run_id, rerun=rerun, reused=sorted(reused))


async def rerun_run(session: AsyncSession, target: PrefectTarget, run_id: str, ui_base: str,
                    inputs: dict[str, Any], idempotency_key: str | None,
                    who: Principal | None = None,
                    trigger_extra: dict[str, Any] | None = None) -> RerunCreated:
    flow_run, row, _ = await finished_run(session, target, run_id, who)
    resolved = resolve_inputs(sync.spec_of(row), {**original_inputs(flow_run), **inputs})
    key = f"rerun:{run_id}:{idempotency_key or uuid.uuid4()}"
    trigger = {"id": None, "type": "rerun", "rerun_of": run_id, "idempotency_key": key,
               **(trigger_extra or {})}
    new_id = await create_run(session, row, target, {**resolved, "flowforge_trigger": trigger},
                              key)
    return RerunCreated(run_id=new_id, prefect_ui_url=runs.ui_url(ui_base, new_id),
                        rerun_of=run_id)


async def get_run(session: AsyncSession, target: PrefectTarget, run_id: str, ui_base: str,
                  who: Principal | None = None) -> RunPublic:
    async with prefect_client(target) as client:
        flow_run = await runs.read_run(client, run_id)
        row = await _row_of(session, flow_run)
        _visible(flow_run, row, who)
        summary = await runs.read_run_summary(client, flow_run.id)
        workflow = (summary.workflow if summary else row.name if row is not None
                    else await runs.flow_name(client, flow_run))
    spec = sync.spec_of(row) if row is not None else None
    return build_run(flow_run, workflow, spec, summary, ui_base)


def build_run(flow_run: FlowRun, workflow: str, spec: Workflow | None,
              summary: RunSummary | None, ui_base: str) -> RunPublic:
    state = runs.run_state(flow_run)
    params = dict(flow_run.parameters or {})
    trigger = params.pop("flowforge_trigger", None)
    params.pop("flowforge_repair", None)
    if summary is not None:
        jobs = [j.model_copy() for j in summary.jobs]
        inputs, outputs = summary.inputs or params, summary.outputs
        trigger = summary.trigger or trigger
    else:
        jobs = [JobRecord(name=n) for n in (topological_order(spec) if spec else [])]
        inputs, outputs = params, None
    if state.terminal:
        # The flow ended without publishing a final summary (cancelled, crashed): jobs it had
        # not finished did not finish.
        end_state = JobState.CANCELLED if state == RunState.CANCELLED else JobState.FAILED
        message = (flow_run.state.message if flow_run.state else None) or state.lower()
        for job in jobs:
            if not job.state.terminal:
                job.state = end_state
                job.reason = job.reason or f"run ended before this job finished: {message}"
    done = sum(j.state.terminal for j in jobs)
    return RunPublic(
        id=str(flow_run.id), workflow=workflow, state=state,
        prefect_state=flow_run.state_name, started_at=flow_run.start_time,
        message=(flow_run.state.message or None) if flow_run.state and state.terminal else None,
        ended_at=flow_run.end_time if state.terminal else None,
        inputs=inputs or {}, outputs=outputs, trigger=trigger,
        progress=Progress(done=done, total=len(jobs)),
        jobs=[JobRunPublic.model_validate(j.model_dump(include=set(JobRunPublic.model_fields)))
              for j in jobs],
        prefect_ui_url=runs.ui_url(ui_base, str(flow_run.id)),
    )


async def list_runs(target: PrefectTarget, row: WorkflowRow, limit: int,
                    offset: int) -> list[RunListItem]:
    if not row.deployment_id:
        return []
    async with prefect_client(target) as client:
        found = await runs.list_runs(client, row.deployment_id, limit, offset)
    return [RunListItem(id=str(r.id), workflow=row.name, state=runs.run_state(r),
                        prefect_state=r.state_name, created_at=r.created,
                        started_at=r.start_time, ended_at=r.end_time) for r in found]


async def logs(session: AsyncSession, target: PrefectTarget, run_id: str, limit: int,
               offset: int, who: Principal | None = None) -> list[LogLine]:
    async with prefect_client(target) as client:
        flow_run = await runs.read_run(client, run_id)
        _visible(flow_run, await _row_of(session, flow_run), who)
        lines = await runs.read_logs(client, flow_run.id, limit, offset)
    return [LogLine(timestamp=log.timestamp, level=_LEVELS.get(log.level, str(log.level)),
                    job=job, message=log.message) for log, job in lines]


async def cancel(session: AsyncSession, target: PrefectTarget, run_id: str,
                 who: Principal | None = None) -> CancelResult:
    """Ask Prefect to cancel the run; the worker stops its process and every job process."""
    async with prefect_client(target) as client:
        flow_run = await runs.read_run(client, run_id)
        _visible(flow_run, await _row_of(session, flow_run), who)
        if flow_run.state is not None and flow_run.state.is_final():
            state = runs.run_state(flow_run)
            raise ConflictError(f"run '{run_id}' already ended ({state})",
                                details={"run_id": run_id, "state": state})
        new_type = await runs.cancel_run(client, flow_run)
    return CancelResult(id=run_id, state="CANCELLING" if new_type == StateType.CANCELLING
                        else "CANCELLED")


__all__ = ["build_run", "cancel", "create_run", "finished_run", "get_run", "list_runs", "logs",
           "repair_run", "rerun_run", "start"]
