"""POST /hooks/{trigger_id}: a signed webhook delivery starts the workflow.

Order matters: the size limit and the signature are checked before anything else is looked at
or started, so an unsigned or oversized request costs nothing and reveals nothing but its
status. The signature is `X-FlowForge-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`,
compared in constant time. `X-FlowForge-Delivery` makes the run's Prefect idempotency key
`webhook:{trigger}:{delivery}`, so a replayed delivery answers with the run it already started.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request
from sqlmodel import select

from api import crud, deliveries, hook_keys, run_views
from api.deps import SessionDep, SettingsDep, TargetDep
from api.schemas import ErrorBody
from api.tables import TriggerRow, WorkflowRow
from api.trigger_schemas import HookAccepted
from flowforge.errors import (
    BadSignatureError,
    InputError,
    NotFoundError,
    PayloadTooLargeError,
)
from flowforge.inputs import resolve_inputs
from flowforge.runtime import templates

router = APIRouter(tags=["webhooks"])
MAX_BODY = 1024 * 1024
ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody}, 404: {"model": ErrorBody}, 413: {"model": ErrorBody},
    422: {"model": ErrorBody}, 503: {"model": ErrorBody},
}


async def _body(request: Request) -> bytes:
    """The raw body, refused past 1 MiB without reading the rest (Content-Length or streamed)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_BODY:
        raise PayloadTooLargeError(f"the body is larger than {MAX_BODY} bytes")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY:
            raise PayloadTooLargeError(f"the body is larger than {MAX_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.removeprefix("sha256=").strip().encode())


def _context(request: Request, body: bytes) -> dict[str, Any]:
    text = body.decode("utf-8", errors="replace")
    try:
        parsed: Any = json.loads(text) if text.strip() else None
    except ValueError:
        parsed = text
    return {"body": parsed, "headers": {k.lower(): v for k, v in request.headers.items()
                                        if k.lower() != "x-flowforge-signature"},
            "query": dict(request.query_params)}


@router.post("/hooks/{trigger_id}", status_code=202, response_model=HookAccepted,
             responses=ERRORS)
async def receive(
    trigger_id: str, request: Request, session: SessionDep, target: TargetDep,
    settings: SettingsDep,
    x_flowforge_signature: Annotated[str | None, Header()] = None,
    x_flowforge_delivery: Annotated[str | None, Header(max_length=200)] = None,
) -> Any:
    body = await _body(request)
    found = (await session.exec(select(TriggerRow, WorkflowRow).join(
        WorkflowRow, WorkflowRow.id == TriggerRow.workflow_id).where(  # type: ignore[arg-type]
        TriggerRow.id == trigger_id, TriggerRow.type == "webhook"))).first()
    if found is None or not found[0].enabled or found[1].deleted:
        raise NotFoundError(f"no enabled webhook '{trigger_id}'", details={"trigger": trigger_id})
    trigger_row, row = found
    secret = hook_keys.unseal(settings, trigger_row.secret) if trigger_row.secret else None
    if secret is None or not signature_ok(secret, body, x_flowforge_signature):
        raise BadSignatureError("missing or wrong X-FlowForge-Signature (expected sha256=<hex "
                                "HMAC-SHA256 of the raw body with the webhook's secret>)")
    wf = crud.spec_of(row)
    trigger = next(t for t in wf.triggers if t.id == trigger_id)
    try:
        rendered = templates.render(dict(trigger.inputs), _context(request, body))
    except templates.TemplateError as exc:
        raise InputError([{"field": "inputs", "message": f"webhook inputs: {exc}"}]) from exc
    inputs = resolve_inputs(wf, rendered)
    delivery = x_flowforge_delivery or str(uuid.uuid4())
    if row.sync_status != "synced" or not row.deployment_id:
        # Stored anyway: the dispatcher starts the run once the workflow is deployed.
        row = await crud.sync_row(session, row, target, unless_synced=True)
    parameter = {"type": "webhook", "id": trigger_id, "name": trigger.name,
                 "delivery_id": delivery}
    stored = await deliveries.record(session, trigger_id, delivery, row.name,
                                     {**inputs, "flowforge_trigger": parameter})
    dispatcher: deliveries.Dispatcher = request.app.state.dispatcher
    run_id = await dispatcher.wait(stored, settings.webhook_answer_seconds)
    return HookAccepted(
        status="started" if run_id else "queued", run_id=run_id, delivery_id=delivery,
        workflow=row.name,
        prefect_ui_url=run_views.ui_url(settings.ui_url(), run_id) if run_id else None)


__all__ = ["MAX_BODY", "router", "signature_ok"]
