"""A webhook delivery: verified, turned into run inputs, stored, and started.

Order matters: the signature is checked before anything else is looked at or started, so an
unsigned request costs nothing and reveals nothing but its status. The signature is
`X-FlowForge-Signature: sha256=<hex HMAC-SHA256(secret, raw body)>`, compared in constant time.
The delivery id makes the run's Prefect idempotency key `webhook:{trigger}:{delivery}`, so a
replayed delivery answers with the run it already started.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Mapping
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.schemas.triggers import HookAccepted
from api.services import deliveries, hook_keys, sync
from api.settings import ApiSettings
from api.tables import TriggerRow, WorkflowRow
from flowforge.controlplane.client import PrefectTarget
from flowforge.controlplane.runs import ui_url
from flowforge.core import templates
from flowforge.core.errors import BadSignatureError, InputError, NotFoundError
from flowforge.core.inputs import resolve_inputs

SIGNATURE_HEADER = "x-flowforge-signature"


def signature_ok(secret: str, body: bytes, header: str | None) -> bool:
    if not header or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.removeprefix("sha256=").strip().encode())


def template_context(body: bytes, headers: Mapping[str, str],
                     query: Mapping[str, str]) -> dict[str, Any]:
    """What a webhook trigger's `inputs` templates read: the body (parsed when it is JSON),
    the headers but the signature, and the query."""
    text = body.decode("utf-8", errors="replace")
    try:
        parsed: Any = json.loads(text) if text.strip() else None
    except ValueError:
        parsed = text
    return {"body": parsed, "headers": {k.lower(): v for k, v in headers.items()
                                        if k.lower() != SIGNATURE_HEADER},
            "query": dict(query)}


async def accept(session: AsyncSession, target: PrefectTarget, settings: ApiSettings,
                 dispatcher: deliveries.Dispatcher, trigger_id: str, body: bytes,
                 headers: Mapping[str, str], query: Mapping[str, str],
                 signature: str | None, delivery_id: str | None) -> HookAccepted:
    found = (await session.exec(select(TriggerRow, WorkflowRow).join(
        WorkflowRow, WorkflowRow.id == TriggerRow.workflow_id).where(  # type: ignore[arg-type]
        TriggerRow.id == trigger_id, TriggerRow.type == "webhook"))).first()
    if found is None or not found[0].enabled or found[1].deleted:
        raise NotFoundError(f"no enabled webhook '{trigger_id}'", details={"trigger": trigger_id})
    trigger_row, row = found
    secret = hook_keys.unseal(settings, trigger_row.secret) if trigger_row.secret else None
    if secret is None or not signature_ok(secret, body, signature):
        raise BadSignatureError("missing or wrong X-FlowForge-Signature (expected sha256=<hex "
                                "HMAC-SHA256 of the raw body with the webhook's secret>)")
    wf = sync.spec_of(row)
    trigger = next(t for t in wf.triggers if t.id == trigger_id)
    try:
        rendered = templates.render(dict(trigger.inputs), template_context(body, headers, query))
    except templates.TemplateError as exc:
        raise InputError([{"field": "inputs", "message": f"webhook inputs: {exc}"}]) from exc
    inputs = resolve_inputs(wf, rendered)
    delivery = delivery_id or str(uuid.uuid4())
    if row.sync_status != "synced" or not row.deployment_id:
        # Stored anyway: the dispatcher starts the run once the workflow is deployed.
        row = await sync.sync_row(session, row, target, unless_synced=True)
    parameter = {"type": "webhook", "id": trigger_id, "name": trigger.name,
                 "delivery_id": delivery}
    stored = await deliveries.record(session, trigger_id, delivery, row.name,
                                     {**inputs, "flowforge_trigger": parameter})
    run_id = await dispatcher.wait(stored, settings.webhook_answer_seconds)
    return HookAccepted(
        status="started" if run_id else "queued", run_id=run_id, delivery_id=delivery,
        workflow=row.name, prefect_ui_url=ui_url(settings.ui_url(), run_id) if run_id else None)


__all__ = ["accept", "signature_ok", "template_context"]
