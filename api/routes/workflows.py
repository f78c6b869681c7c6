"""/workflows: define, read, replace, delete, validate and inspect workflows."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse
from sqlmodel import col, select

from api.deps import SessionDep, TargetDep
from api.schemas.common import errors
from api.schemas.workflows import (
    DeletionPending,
    SyncStatus,
    ValidationReport,
    WorkflowPublic,
    WorkflowSummary,
)
from api.services import workflows
from api.tables import WorkflowRow
from flowforge.controlplane.compiler import compile_workflow, mermaid
from flowforge.core.document import parse_document
from flowforge.core.errors import SpecError
from flowforge.core.validation import load_workflow
from flowforge.core.workflow import Workflow, spec_hash, topological_order

router = APIRouter(prefix="/workflows", tags=["workflows"])

ERRORS = errors(404, 409, 422)
DOCUMENT_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "A workflow document, as JSON or YAML (Content-Type application/yaml).",
        "content": {
            "application/json": {"schema": {"$ref": "#/components/schemas/WorkflowDocument"}},
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
    row = await workflows.create(session, target, await _document(request))
    return workflows.public(row)


@router.get("", response_model=list[WorkflowSummary])
async def list_workflows(session: SessionDep) -> list[WorkflowSummary]:
    rows = await session.exec(select(WorkflowRow).where(col(WorkflowRow.deleted).is_(False))
                              .order_by(col(WorkflowRow.name)))
    return [workflows.summary(row) for row in rows.all()]


@router.get("/{name}", response_model=WorkflowPublic, responses=ERRORS)
async def get_workflow(name: str, session: SessionDep) -> WorkflowPublic:
    return workflows.public(await workflows.get_row(session, name))


@router.put("/{name}", response_model=WorkflowPublic, responses=ERRORS,
            openapi_extra=DOCUMENT_BODY)
async def replace_workflow(name: str, request: Request, session: SessionDep,
                           target: TargetDep) -> WorkflowPublic:
    row = await workflows.get_row(session, name)
    row = await workflows.replace(session, target, row, await _document(request))
    return workflows.public(row)


@router.delete("/{name}", status_code=204,
               responses={**ERRORS, 202: {"model": DeletionPending}})
async def delete_workflow(name: str, session: SessionDep, target: TargetDep) -> Response:
    """204 once the workflow is gone from FlowForge and Prefect. 202 when Prefect could not be
    reached (or refused): the workflow is gone from FlowForge's API already, and the sync loop
    keeps removing its deployment and automations until it succeeds; until then a deleted
    workflow's automation may still fire, which the caller should know."""
    left = await workflows.delete_workflow(session, target, name)
    if left is None:
        return Response(status_code=204)
    body = DeletionPending(name=name, sync=SyncStatus(status=left.sync_status,
                                                      error=left.sync_error),
                           detail="deleted in FlowForge; removing it from Prefect did not finish "
                                  "and is retried in the background")
    return JSONResponse(body.model_dump(), status_code=202)


@router.post("/{name}/validate", response_model=ValidationReport, responses=ERRORS)
async def validate_workflow(name: str, request: Request, session: SessionDep) -> ValidationReport:
    """Validate a new version of the workflow without storing it (or, with no body, the stored one)."""
    row = await workflows.get_row(session, name)
    if (await request.body()).strip():
        wf = await _document(request)
        if wf.name != name:
            raise SpecError([{"field": "name", "message": f"the document's name '{wf.name}' "
                              f"does not match the URL's '{name}'"}])
        await workflows.check_document(session, wf)
    else:
        wf = load_workflow(workflows.spec_of(row).model_dump(mode="json", exclude_none=True))
    return ValidationReport(valid=True, spec_hash=spec_hash(wf), order=topological_order(wf),
                            sequential=wf.is_sequential)


@router.get("/{name}/flow", response_class=PlainTextResponse, responses=ERRORS)
async def generated_flow(name: str, session: SessionDep) -> str:
    return compile_workflow(workflows.spec_of(await workflows.get_row(session, name))).source


@router.get("/{name}/graph", response_class=PlainTextResponse, responses=ERRORS)
async def graph(name: str, session: SessionDep) -> str:
    return mermaid(workflows.spec_of(await workflows.get_row(session, name)))
