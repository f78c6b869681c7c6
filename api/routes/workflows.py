"""/workflows: define, read, replace, delete, validate and inspect workflows."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from api import crud
from api.deps import SessionDep, TargetDep
from api.schemas import (
    DeletionPending,
    ErrorBody,
    SyncStatus,
    ValidationReport,
    WorkflowPublic,
    WorkflowSummary,
)
from api.server_refs import check_servers
from api.tables import WorkflowRow
from api.workflow_calls import check_calls
from flowforge.compiler import compile_workflow, mermaid
from flowforge.errors import ConflictError, SpecError
from flowforge.spec import Workflow, load_workflow, parse_document, spec_hash, topological_order

router = APIRouter(prefix="/workflows", tags=["workflows"])

ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 422: {"model": ErrorBody},
}
DOCUMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A workflow document, as JSON or YAML (Content-Type application/yaml).",
        "content": {
            "application/json": {"schema": Workflow.model_json_schema(
                ref_template="#/components/schemas/{model}")},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


async def _document(request: Request) -> Workflow:
    body = await request.body()
    if not body.strip():
        raise SpecError([{"field": "", "message": "the request body is empty; send a workflow "
                          "document as JSON or YAML"}])
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise SpecError([{"field": "", "message": "the request body is not UTF-8"}]) from exc
    return load_workflow(parse_document(text))


@router.post("", status_code=201, response_model=WorkflowPublic, responses=ERRORS,
             openapi_extra=DOCUMENT_BODY)
async def create_workflow(request: Request, session: SessionDep,
                          target: TargetDep) -> WorkflowPublic:
    wf = await _document(request)
    await check_calls(session, wf)  # sub-workflow targets, call cycles
    await check_servers(session, wf)  # ssh targets name registered servers
    existing = (await session.exec(select(WorkflowRow).where(WorkflowRow.name == wf.name))).first()
    if existing is not None and not existing.deleted:
        raise ConflictError(f"workflow '{wf.name}' already exists; PUT /workflows/{wf.name} "
                            "replaces it", details={"workflow": wf.name})
    try:
        row = await crud.store(session, wf, existing)
    except IntegrityError as exc:
        await session.rollback()
        raise ConflictError(f"workflow '{wf.name}' already exists",
                            details={"workflow": wf.name}) from exc
    row = await crud.sync_row(session, row, target)
    return crud.public(row)


@router.get("", response_model=list[WorkflowSummary])
async def list_workflows(session: SessionDep) -> list[WorkflowSummary]:
    rows = await session.exec(select(WorkflowRow).where(col(WorkflowRow.deleted).is_(False))
                              .order_by(col(WorkflowRow.name)))
    return [crud.summary(row) for row in rows.all()]


@router.get("/{name}", response_model=WorkflowPublic, responses=ERRORS)
async def get_workflow(name: str, session: SessionDep) -> WorkflowPublic:
    return crud.public(await crud.get_row(session, name))


@router.put("/{name}", response_model=WorkflowPublic, responses=ERRORS,
            openapi_extra=DOCUMENT_BODY)
async def replace_workflow(name: str, request: Request, session: SessionDep,
                           target: TargetDep) -> WorkflowPublic:
    row = await crud.get_row(session, name)
    wf = await _document(request)
    await check_calls(session, wf)  # sub-workflow targets, call cycles
    await check_servers(session, wf)  # ssh targets name registered servers
    if wf.name != name:
        raise SpecError([{"field": "name", "message": f"the document's name '{wf.name}' does "
                          f"not match the URL's '{name}'; renaming is not supported"}])
    row = await crud.store(session, wf, row)
    row = await crud.sync_row(session, row, target)
    return crud.public(row)


@router.delete("/{name}", status_code=204,
               responses={**ERRORS, 202: {"model": DeletionPending}})
async def delete_workflow(name: str, session: SessionDep, target: TargetDep) -> Response:
    """204 once the workflow is gone from FlowForge and Prefect. 202 when Prefect could not be
    reached (or refused): the workflow is gone from FlowForge's API already, and the sync loop
    keeps removing its deployment and automations until it succeeds; until then a deleted
    workflow's automation may still fire, which the caller should know."""
    row = await crud.get_row(session, name)
    await crud.refuse_if_depended_on(session, name)  # 409 naming the dependants
    row.deleted, row.sync_status = True, "pending"
    session.add(row)
    await session.commit()
    await crud.sync_row(session, row, target)  # purges the row once Prefect forgot it
    left = (await session.exec(select(WorkflowRow.sync_status, WorkflowRow.sync_error)
                               .where(WorkflowRow.name == name))).first()
    if left is None:
        return Response(status_code=204)
    status, error = left
    body = DeletionPending(name=name, sync=SyncStatus(status=status, error=error),
                           detail="deleted in FlowForge; removing it from Prefect did not finish "
                                  "and is retried in the background")
    return JSONResponse(body.model_dump(), status_code=202)


@router.post("/{name}/validate", response_model=ValidationReport, responses=ERRORS)
async def validate_workflow(name: str, request: Request, session: SessionDep) -> ValidationReport:
    """Validate a new version of the workflow without storing it (or, with no body, the stored one)."""
    row = await crud.get_row(session, name)
    if (await request.body()).strip():
        wf = await _document(request)
        await check_calls(session, wf)  # sub-workflow targets, call cycles
        await check_servers(session, wf)
        if wf.name != name:
            raise SpecError([{"field": "name", "message": f"the document's name '{wf.name}' "
                              f"does not match the URL's '{name}'"}])
    else:
        wf = load_workflow(crud.spec_of(row).model_dump(mode="json", exclude_none=True))
    return ValidationReport(valid=True, spec_hash=spec_hash(wf), order=topological_order(wf),
                            sequential=wf.is_sequential)


@router.get("/{name}/flow", response_class=PlainTextResponse, responses=ERRORS)
async def generated_flow(name: str, session: SessionDep) -> str:
    return compile_workflow(crud.spec_of(await crud.get_row(session, name))).source


@router.get("/{name}/graph", response_class=PlainTextResponse, responses=ERRORS)
async def graph(name: str, session: SessionDep) -> str:
    return mermaid(crud.spec_of(await crud.get_row(session, name)))
