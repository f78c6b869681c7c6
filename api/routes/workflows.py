"""/workflows: define, read, replace, delete, validate and inspect workflows."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse, PlainTextResponse

from api.deps import Editor, Reader, SessionDep, TargetDep
from api.errors import UnsupportedMediaTypeError
from api.schemas.common import errors
from api.schemas.workflows import (
    DeletionPending,
    SyncStatus,
    ValidationReport,
    WorkflowPublic,
    WorkflowSummary,
)
from api.services import workflows
from flowforge.controlplane.compiler import compile_workflow, mermaid
from flowforge.core.document import parse_document
from flowforge.core.errors import SpecError
from flowforge.core.validation import load_workflow
from flowforge.core.workflow import Workflow, spec_hash, topological_order

router = APIRouter(prefix="/workflows", tags=["workflows"])

ERRORS = errors(401, 403, 404, 409, 413, 415, 422)
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


JSON_TYPES = ("application/json",)
YAML_TYPES = ("application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml")


def _syntax(request: Request) -> str | None:
    """The document's syntax as declared ("json", "yaml"), None when nothing is declared;
    415 for anything else, so a browser's cross-site form or `text/plain` fetch is refused."""
    declared = request.headers.get("content-type")
    if declared is None:
        return None
    media = declared.split(";", 1)[0].strip().lower()
    if media in JSON_TYPES or (media.startswith("application/") and media.endswith("+json")):
        return "json"
    if media in YAML_TYPES:
        return "yaml"
    raise UnsupportedMediaTypeError(f"a workflow document is JSON (application/json) or YAML "
                                    f"(application/yaml), not {media}",
                                    details={"content_type": media})


async def _document(request: Request) -> Workflow:
    syntax = _syntax(request)
    body = await request.body()
    if not body.strip():
        raise SpecError([{"field": "", "message": "the request body is empty; send a workflow "
                          "document as JSON or YAML"}])
    try:
        text = body.decode()
    except UnicodeDecodeError as exc:
        raise SpecError([{"field": "", "message": "the request body is not UTF-8"}]) from exc
    # Parsing and validating a large document takes a while: not on the event loop.
    return await asyncio.to_thread(lambda: load_workflow(parse_document(text, syntax)))


@router.post("", status_code=201, response_model=WorkflowPublic, responses=ERRORS,
             openapi_extra=DOCUMENT_BODY)
async def create_workflow(request: Request, session: SessionDep, target: TargetDep,
                          who: Editor) -> WorkflowPublic:
    row = await workflows.create(session, target, await _document(request), who)
    return workflows.public(row)


@router.get("", response_model=list[WorkflowSummary])
async def list_workflows(session: SessionDep, who: Reader) -> list[WorkflowSummary]:
    return [workflows.summary(row) for row in await workflows.list_rows(session, who)]


@router.get("/{name}", response_model=WorkflowPublic, responses=ERRORS)
async def get_workflow(name: str, session: SessionDep, who: Reader) -> WorkflowPublic:
    return workflows.public(await workflows.get_row(session, name, who))


@router.put("/{name}", response_model=WorkflowPublic, responses=ERRORS,
            openapi_extra=DOCUMENT_BODY)
async def replace_workflow(name: str, request: Request, session: SessionDep, target: TargetDep,
                           who: Editor) -> WorkflowPublic:
    row = await workflows.get_row(session, name, who)
    row = await workflows.replace(session, target, row, await _document(request), who=who)
    return workflows.public(row)


@router.delete("/{name}", status_code=204,
               responses={**ERRORS, 202: {"model": DeletionPending}})
async def delete_workflow(name: str, session: SessionDep, target: TargetDep,
                          who: Editor) -> Response:
    """204 once the workflow is gone from FlowForge and Prefect. 202 when Prefect could not be
    reached (or refused): the workflow is gone from FlowForge's API already, and the sync loop
    keeps removing its deployment and automations until it succeeds; until then a deleted
    workflow's automation may still fire, which the caller should know."""
    left = await workflows.delete_workflow(session, target, name, who)
    if left is None:
        return Response(status_code=204)
    body = DeletionPending(name=name, sync=SyncStatus(status=left.sync_status,
                                                      error=left.sync_error),
                           detail="deleted in FlowForge; removing it from Prefect did not finish "
                                  "and is retried in the background")
    return JSONResponse(body.model_dump(), status_code=202)


@router.post("/{name}/validate", response_model=ValidationReport, responses=ERRORS)
async def validate_workflow(name: str, request: Request, session: SessionDep,
                            who: Editor) -> ValidationReport:
    """Validate a new version of the workflow without storing it (or, with no body, the stored one)."""
    row = await workflows.get_row(session, name, who)
    if (await request.body()).strip():
        wf = await _document(request)
        if wf.name != name:
            raise SpecError([{"field": "name", "message": f"the document's name '{wf.name}' "
                              f"does not match the URL's '{name}'"}])
        await workflows.check_document(session, wf, who)
    else:
        wf = load_workflow(workflows.spec_of(row).model_dump(mode="json", exclude_none=True))
    return ValidationReport(valid=True, spec_hash=spec_hash(wf), order=topological_order(wf),
                            sequential=wf.is_sequential)


@router.get("/{name}/flow", response_class=PlainTextResponse, responses=ERRORS)
async def generated_flow(name: str, session: SessionDep, who: Reader) -> str:
    return compile_workflow(workflows.spec_of(await workflows.get_row(session, name, who))).source


@router.get("/{name}/graph", response_class=PlainTextResponse, responses=ERRORS)
async def graph(name: str, session: SessionDep, who: Reader) -> str:
    return mermaid(workflows.spec_of(await workflows.get_row(session, name, who)))
