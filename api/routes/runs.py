"""Runs: start one, list a workflow's, read one (with per-job detail), its logs, cancel,
repair or re-run it."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Query

from api.deps import LimitsDep, Reader, Runner, SessionDep, SettingsDep, TargetDep
from api.schemas.common import errors
from api.schemas.runs import (
    CancelResult,
    LogLine,
    RepairCreate,
    RepairCreated,
    RerunCreate,
    RerunCreated,
    RunCreate,
    RunCreated,
    RunListItem,
    RunPublic,
)
from api.services import runs, workflows

router = APIRouter(tags=["runs"])
ERRORS = errors(401, 403, 404, 409, 422, 429, 503)
Key = Annotated[str | None, Header(max_length=200)]


@router.post("/workflows/{name}/runs", status_code=201, response_model=RunCreated,
             responses=ERRORS)
async def start_run(name: str, body: RunCreate, session: SessionDep, target: TargetDep,
                    settings: SettingsDep, who: Runner, limits: LimitsDep,
                    idempotency_key: Key = None) -> RunCreated:
    """Start a run. The same `Idempotency-Key` header twice starts one run and answers it twice."""
    row = await workflows.get_row(session, name, who)
    await limits.hit(limits.runs, who.key_id)
    return await runs.start(session, target, row, settings.ui_url(), body.inputs, idempotency_key)


@router.get("/workflows/{name}/runs", response_model=list[RunListItem], responses=ERRORS)
async def list_workflow_runs(
    name: str, session: SessionDep, target: TargetDep, who: Reader,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0,
) -> list[RunListItem]:
    return await runs.list_runs(target, await workflows.get_row(session, name, who), limit,
                                offset)


@router.get("/runs/{run_id}", response_model=RunPublic, responses=ERRORS)
async def get_run(run_id: str, session: SessionDep, target: TargetDep, settings: SettingsDep,
                  who: Reader) -> RunPublic:
    return await runs.get_run(session, target, run_id, settings.ui_url(), who)


@router.post("/runs/{run_id}/repair", status_code=201, response_model=RepairCreated,
             responses=ERRORS)
async def repair_run(run_id: str, session: SessionDep, target: TargetDep, settings: SettingsDep,
                     who: Runner, limits: LimitsDep, body: RepairCreate | None = None,
                     idempotency_key: Key = None) -> RepairCreated:
    """A new run, linked to this one, that re-runs only the jobs that failed, were cancelled
    or did not run (and their dependants), reusing the completed jobs' outputs."""
    await limits.hit(limits.runs, who.key_id)
    return await runs.repair_run(session, target, run_id, settings.ui_url(),
                                 (body or RepairCreate()).jobs, idempotency_key, who)


@router.post("/runs/{run_id}/rerun", status_code=201, response_model=RerunCreated,
             responses=ERRORS)
async def rerun_run(run_id: str, session: SessionDep, target: TargetDep, settings: SettingsDep,
                    who: Runner, limits: LimitsDep, body: RerunCreate | None = None,
                    idempotency_key: Key = None) -> RerunCreated:
    """Run the whole workflow again with the run's inputs, changed by any given in the body."""
    await limits.hit(limits.runs, who.key_id)
    return await runs.rerun_run(session, target, run_id, settings.ui_url(),
                                (body or RerunCreate()).inputs, idempotency_key, who)


@router.get("/runs/{run_id}/logs", response_model=list[LogLine], responses=ERRORS)
async def get_run_logs(run_id: str, session: SessionDep, target: TargetDep, who: Reader,
                       limit: Annotated[int, Query(ge=1, le=200)] = 200,
                       offset: Annotated[int, Query(ge=0, le=1_000_000)] = 0) -> list[LogLine]:
    return await runs.logs(session, target, run_id, limit, offset, who)


@router.post("/runs/{run_id}/cancel", status_code=202, response_model=CancelResult,
             responses=ERRORS)
async def cancel_run(run_id: str, session: SessionDep, target: TargetDep,
                     who: Runner) -> CancelResult:
    """Ask Prefect to cancel the run; the worker stops its process and every job process."""
    return await runs.cancel(session, target, run_id, who)
