"""Runs: start one, list a workflow's, read one (with per-job detail), its logs, cancel,
repair or re-run it."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Query
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, State
from sqlmodel import select

from api import crud, run_views
from api.deps import SessionDep, SettingsDep, TargetDep
from api.schemas import (
    CancelResult,
    ErrorBody,
    LogLine,
    RepairCreate,
    RepairCreated,
    RerunCreate,
    RerunCreated,
    RunCreate,
    RunCreated,
    RunPublic,
    RunSummary,
)
from api.tables import WorkflowRow
from flowforge import repair
from flowforge.errors import ConflictError, NotFoundError, PrefectUnavailableError
from flowforge.prefect_sync import prefect_client
from flowforge.spec import resolve_inputs

router = APIRouter(tags=["runs"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 422: {"model": ErrorBody},
    503: {"model": ErrorBody},
}


@router.post("/workflows/{name}/runs", status_code=201, response_model=RunCreated,
             responses=ERRORS)
async def start_run(
    name: str,
    body: RunCreate,
    session: SessionDep,
    target: TargetDep,
    settings: SettingsDep,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RunCreated:
    """Start a run. The same `Idempotency-Key` header twice starts one run and answers it twice."""
    row = await crud.get_row(session, name)
    inputs = resolve_inputs(crud.spec_of(row), body.inputs)
    key = f"manual:{idempotency_key or uuid.uuid4()}"
    trigger = {"id": None, "type": "manual", "idempotency_key": key}
    run_id = await _create_run(session, row, target, {**inputs, "flowforge_trigger": trigger}, key)
    return RunCreated(run_id=run_id, prefect_ui_url=run_views.ui_url(settings.ui_url(), run_id))


async def _create_run(session: SessionDep, row: WorkflowRow, target: TargetDep,
                      parameters: dict[str, Any], key: str) -> str:
    """Create a flow run of the workflow's deployment (synced first if need be); its id."""
    name = row.name
    if row.sync_status != "synced" or not row.deployment_id:
        row = await crud.sync_row(session, row, target, unless_synced=True)
        if row.sync_status != "synced":
            raise PrefectUnavailableError(
                f"workflow '{name}' is not deployed to Prefect yet: {row.sync_error}")
    async with prefect_client(target) as client:
        try:
            flow_run = await client.create_flow_run_from_deployment(
                UUID(row.deployment_id), parameters=parameters,
                idempotency_key=key, tags=["flowforge"])
        except ObjectNotFound:
            # The deployment was removed behind our back: converge, then try once more.
            row = await crud.sync_row(session, row, target)
            flow_run = await client.create_flow_run_from_deployment(
                UUID(row.deployment_id or str(uuid.UUID(int=0))), parameters=parameters,
                idempotency_key=key, tags=["flowforge"])
    return str(flow_run.id)


async def _finished_run(session: SessionDep, target: TargetDep, run_id: str,
                        ) -> tuple[FlowRun, WorkflowRow, dict[str, Any] | None]:
    """A terminal run, the stored workflow it belongs to and its published summary."""
    async with prefect_client(target) as client:
        flow_run = await run_views.read_flow_run(client, run_id)
        summary = await run_views.read_summary(client, flow_run.id)
    if flow_run.state is None or not flow_run.state.is_final():
        raise ConflictError(f"run '{run_id}' has not ended ({run_views.run_state(flow_run)}); "
                            "cancel it or wait", details={"run_id": run_id})
    row = None
    if flow_run.deployment_id is not None:
        row = (await session.exec(select(WorkflowRow).where(
            WorkflowRow.deployment_id == str(flow_run.deployment_id)))).first()
    if row is None or row.deleted:
        raise NotFoundError(f"the workflow of run '{run_id}' no longer exists",
                            details={"run_id": run_id})
    return flow_run, row, summary


def _original_inputs(flow_run: FlowRun) -> dict[str, Any]:
    return {k: v for k, v in (flow_run.parameters or {}).items()
            if k not in ("flowforge_trigger", "flowforge_repair")}


@router.get("/workflows/{name}/runs", response_model=list[RunSummary], responses=ERRORS)
async def list_workflow_runs(
    name: str, session: SessionDep, target: TargetDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[RunSummary]:
    row = await crud.get_row(session, name)
    if not row.deployment_id:
        return []
    async with prefect_client(target) as client:
        return await run_views.list_runs(client, row.deployment_id, name, limit, offset)


@router.get("/runs/{run_id}", response_model=RunPublic, responses=ERRORS)
async def get_run(run_id: str, session: SessionDep, target: TargetDep,
                  settings: SettingsDep) -> RunPublic:
    async with prefect_client(target) as client:
        flow_run = await run_views.read_flow_run(client, run_id)
        summary = await run_views.read_summary(client, flow_run.id)
        workflow = summary["workflow"] if summary else None
        row = None
        if flow_run.deployment_id is not None:
            row = (await session.exec(select(WorkflowRow).where(
                WorkflowRow.deployment_id == str(flow_run.deployment_id)))).first()
        if workflow is None:
            if row is None:
                flow = await client.read_flow(flow_run.flow_id)
                workflow = flow.name
            else:
                workflow = row.name
    spec = crud.spec_of(row) if row is not None else None
    return run_views.build_run(flow_run, workflow, spec, summary, settings.ui_url())


@router.post("/runs/{run_id}/repair", status_code=201, response_model=RepairCreated,
             responses=ERRORS)
async def repair_run(
    run_id: str, session: SessionDep, target: TargetDep, settings: SettingsDep,
    body: RepairCreate | None = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RepairCreated:
    """A new run, linked to this one, that re-runs only the jobs that failed, were cancelled
    or did not run (and their dependants), reusing the completed jobs' outputs."""
    flow_run, row, summary = await _finished_run(session, target, run_id)
    if summary is None:
        raise ConflictError(f"run '{run_id}' published no job summary (it never started); "
                            "use POST /runs/{id}/rerun", details={"run_id": run_id})
    rerun, reused = repair.plan(crud.spec_of(row), summary, (body or RepairCreate()).jobs)
    if not rerun:
        raise ConflictError(f"every job of run '{run_id}' completed; nothing to repair "
                            "(name jobs to re-run in 'jobs', or use POST /runs/{id}/rerun)",
                            details={"run_id": run_id})
    key = f"repair:{run_id}:{idempotency_key or uuid.uuid4()}"
    trigger = {"id": None, "type": "repair", "repair_of": run_id, "idempotency_key": key}
    new_id = await _create_run(session, row, target, {
        **_original_inputs(flow_run), "flowforge_trigger": trigger, "flowforge_repair": reused,
    }, key)
    return RepairCreated(run_id=new_id, prefect_ui_url=run_views.ui_url(settings.ui_url(), new_id),
                         repair_of=run_id, rerun=rerun, reused=sorted(reused))


@router.post("/runs/{run_id}/rerun", status_code=201, response_model=RerunCreated,
             responses=ERRORS)
async def rerun_run(
    run_id: str, session: SessionDep, target: TargetDep, settings: SettingsDep,
    body: RerunCreate | None = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RerunCreated:
    """Run the whole workflow again with the run's inputs, changed by any given in the body."""
    flow_run, row, _ = await _finished_run(session, target, run_id)
    inputs = resolve_inputs(crud.spec_of(row),
                            {**_original_inputs(flow_run), **(body or RerunCreate()).inputs})
    key = f"rerun:{run_id}:{idempotency_key or uuid.uuid4()}"
    trigger = {"id": None, "type": "rerun", "rerun_of": run_id, "idempotency_key": key}
    new_id = await _create_run(session, row, target, {**inputs, "flowforge_trigger": trigger}, key)
    return RerunCreated(run_id=new_id, prefect_ui_url=run_views.ui_url(settings.ui_url(), new_id),
                        rerun_of=run_id)


@router.get("/runs/{run_id}/logs", response_model=list[LogLine], responses=ERRORS)
async def get_run_logs(
    run_id: str, target: TargetDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 200,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> list[LogLine]:
    async with prefect_client(target) as client:
        flow_run = await run_views.read_flow_run(client, run_id)
        return await run_views.read_logs(client, flow_run.id, limit, offset)


@router.post("/runs/{run_id}/cancel", status_code=202, response_model=CancelResult,
             responses=ERRORS)
async def cancel_run(run_id: str, target: TargetDep) -> CancelResult:
    """Ask Prefect to cancel the run; the worker stops its process and every job process."""
    async with prefect_client(target) as client:
        flow_run = await run_views.read_flow_run(client, run_id)
        if flow_run.state is not None and flow_run.state.is_final():
            raise ConflictError(f"run '{run_id}' already ended ({run_views.run_state(flow_run)})",
                                details={"run_id": run_id, "state": run_views.run_state(flow_run)})
        if flow_run.state_type in (StateType.SCHEDULED, StateType.PAUSED):
            new_state: State[Any] = Cancelled(message="cancelled through FlowForge")
        else:
            new_state = State(type=StateType.CANCELLING, message="cancelled through FlowForge")
        await client.set_flow_run_state(flow_run.id, new_state, force=True)
    return CancelResult(id=run_id, state="CANCELLING" if new_state.type == StateType.CANCELLING
                        else "CANCELLED")
