"""Runs: start one, list a workflow's, read one (with per-job detail), its logs, cancel it."""

from __future__ import annotations

import uuid
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Header, Query
from prefect.client.schemas.objects import StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, State
from sqlmodel import select

from api import crud, run_views
from api.deps import SessionDep, SettingsDep, TargetDep
from api.schemas import CancelResult, ErrorBody, LogLine, RunCreate, RunCreated, RunPublic, RunSummary
from api.tables import WorkflowRow
from flowforge.errors import ConflictError, PrefectUnavailableError
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
    wf = crud.spec_of(row)
    inputs = resolve_inputs(wf, body.inputs)
    key = f"manual:{idempotency_key or uuid.uuid4()}"
    if row.sync_status != "synced" or not row.deployment_id:
        row = await crud.sync_row(session, row, target)
        if row.sync_status != "synced":
            raise PrefectUnavailableError(
                f"workflow '{name}' is not deployed to Prefect yet: {row.sync_error}")
    trigger = {"id": None, "type": "manual", "idempotency_key": key}
    async with prefect_client(target) as client:
        try:
            flow_run = await client.create_flow_run_from_deployment(
                UUID(row.deployment_id), parameters={**inputs, "flowforge_trigger": trigger},
                idempotency_key=key, tags=["flowforge"])
        except ObjectNotFound:
            # The deployment was removed behind our back: converge, then try once more.
            row = await crud.sync_row(session, row, target)
            flow_run = await client.create_flow_run_from_deployment(
                UUID(row.deployment_id or str(uuid.UUID(int=0))),
                parameters={**inputs, "flowforge_trigger": trigger},
                idempotency_key=key, tags=["flowforge"])
    return RunCreated(run_id=str(flow_run.id),
                      prefect_ui_url=run_views.ui_url(settings.ui_url(), str(flow_run.id)))


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
