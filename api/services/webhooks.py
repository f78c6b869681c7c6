"""A webhook delivery: verified, turned into run inputs, stored, and started.

Order matters: the signature is checked before anything else is looked at or started, so an
unsigned request costs nothing and reveals nothing but its status. The trigger's `verify` names
the scheme (`signatures`): FlowForge's signs a timestamp and the delivery id with the body. The
signed delivery id makes the run's Prefect idempotency key `webhook:{trigger}:{delivery}`, so
a replayed delivery answers with the run it already started. During a rotation the previous
secret stays valid until its `previous_until`.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.middleware import note
from api.schemas.triggers import HookAccepted
from api.services import deliveries, hook_keys, signatures, sync
from api.settings import ApiSettings
from api.tables import TriggerRow, WorkflowRow
from flowforge.controlplane.client import PrefectTarget
from flowforge.controlplane.runs import ui_url
from flowforge.core import templates
from flowforge.core.document import MAX_DEPTH, check_bounds
from flowforge.core.errors import BadSignatureError, InputError, NotFoundError, SpecError
from flowforge.core.inputs import resolve_inputs


def template_context(body: bytes, headers: Mapping[str, str],
                     query: Mapping[str, str]) -> dict[str, Any]:
    """What a webhook trigger's `inputs` templates read: the body (parsed when it is JSON,
    within the document bounds), the headers but the signatures, and the query."""
    text = body.decode("utf-8", errors="replace")
    try:
        parsed: Any = json.loads(text) if text.strip() else None
        check_bounds(parsed)
    except RecursionError:
        raise InputError([{"field": "body", "message": "the JSON body is nested deeper than "
                           f"{MAX_DEPTH} levels"}]) from None
    except SpecError as exc:
        raise InputError([{"field": "body", "message": exc.problems[0]["message"]}]) from None
    except ValueError:
        parsed = text
    return {"body": parsed, "headers": {k.lower(): v for k, v in headers.items()
                                        if k.lower() not in signatures.SIGNATURE_HEADERS},
            "query": dict(query)}


def _secrets(settings: ApiSettings, row: TriggerRow, now: datetime) -> list[str]:
    """The secrets a delivery may be signed with: the current one, and the previous one
    until its rotation grace ends."""
    out = [hook_keys.unseal(settings, row.secret)] if row.secret else []
    until = row.previous_until
    if row.previous_secret and until is not None and \
            (until if until.tzinfo else until.replace(tzinfo=UTC)) > now:
        out.append(hook_keys.unseal(settings, row.previous_secret))
    return out


async def accept(session: AsyncSession, target: PrefectTarget, settings: ApiSettings,
                 dispatcher: deliveries.Dispatcher, trigger_id: str, body: bytes,
                 headers: Mapping[str, str], query: Mapping[str, str],
                 count: Callable[[], Awaitable[None]] | None = None) -> HookAccepted:
    """`count()` is the trigger's rate limit, counted once the delivery is known to be signed
    (so unsigned noise cannot use up a webhook's allowance)."""
    found = (await session.exec(select(TriggerRow, WorkflowRow).join(
        WorkflowRow, WorkflowRow.id == TriggerRow.workflow_id).where(  # type: ignore[arg-type]
        TriggerRow.id == trigger_id, TriggerRow.type == "webhook"))).first()
    if found is None or not found[0].enabled or found[1].deleted:
        raise NotFoundError(f"no enabled webhook '{trigger_id}'", details={"trigger": trigger_id})
    trigger_row, row = found
    note(namespace=row.namespace, target=f"trigger:{trigger_id}")
    wf = sync.spec_of(row)
    trigger = next(t for t in wf.triggers if t.id == trigger_id)
    scheme = getattr(trigger, "verify", "flowforge")
    try:
        verified = signatures.verify(scheme, _secrets(settings, trigger_row, datetime.now(UTC)),
                                     body, headers, settings.webhook_tolerance)
    except signatures.SignatureError as exc:
        raise BadSignatureError(str(exc)) from None
    if count is not None:
        await count()
    try:
        # Off the event loop: a body up to FLOWFORGE_MAX_BODY_BYTES is parsed and bounded there.
        context = await asyncio.to_thread(template_context, body, headers, query)
        rendered = templates.render(dict(trigger.inputs), context)
    except templates.TemplateError as exc:
        raise InputError([{"field": "inputs", "message": f"webhook inputs: {exc}"}]) from exc
    inputs = resolve_inputs(wf, rendered)
    delivery = verified.delivery_id
    if row.sync_status != "synced" or not row.deployment_id:
        # Stored anyway: the dispatcher starts the run once the workflow is deployed.
        row = await sync.sync_row(session, row, target, unless_synced=True)
    parameter = {"type": "webhook", "id": trigger_id, "name": trigger.name,
                 "delivery_id": delivery}
    stored = await deliveries.record(session, trigger_id, delivery, row.name,
                                     {**inputs, "flowforge_trigger": parameter})
    run_id = await dispatcher.wait(stored, settings.webhook_answer_seconds)
    if run_id is not None:
        note(target=f"run:{run_id}")
    return HookAccepted(
        status="started" if run_id else "queued", run_id=run_id, delivery_id=delivery,
        workflow=row.name, prefect_ui_url=ui_url(settings.ui_url(), run_id) if run_id else None)


__all__ = ["accept", "template_context"]
