"""Triggers one at a time: each change is a change of its workflow's document.

Validated whole (cross-workflow rules included), stored in one transaction, then synced; the
sync diffs by trigger id, so changing one trigger touches only its own Prefect object.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from pydantic import TypeAdapter, ValidationError
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth import Principal
from api.schemas.triggers import SecretRotation, TriggerPublic
from api.services import hook_keys, workflows
from api.settings import ApiSettings
from api.tables import TriggerRow, WorkflowRow, utcnow
from flowforge.controlplane.client import PrefectTarget
from flowforge.core.errors import NotFoundError, SpecError
from flowforge.core.triggers import AnyTrigger, ScheduleTrigger, Trigger, next_fire_times
from flowforge.core.validation import load_workflow
from flowforge.core.workflow import Workflow

_ADAPTER: TypeAdapter[AnyTrigger] = TypeAdapter(Trigger)


def public(row: WorkflowRow, trigger: AnyTrigger, stored: TriggerRow | None,
           secret: str | None = None, detail: bool = False) -> TriggerPublic:
    out = TriggerPublic(
        id=trigger.id or "", type=trigger.type, name=trigger.name or "", enabled=trigger.enabled,
        workflow=row.name, config=trigger.model_dump(mode="json", exclude_none=True),
        sync=row.sync_status)
    if trigger.type == "webhook":
        out.url = f"/hooks/{trigger.id}"
        out.secret = secret
        out.secret_set = bool(stored and stored.secret) or secret is not None
    if detail and isinstance(trigger, ScheduleTrigger):
        out.next_runs = next_fire_times(trigger, 5)
    return out


def find(wf: Workflow, trigger_id: str) -> int:
    for i, t in enumerate(wf.triggers):
        if t.id == trigger_id:
            return i
    raise NotFoundError(f"workflow '{wf.name}' has no trigger '{trigger_id}'",
                        details={"workflow": wf.name, "trigger": trigger_id})


def _validated(wf: Workflow, triggers: list[dict[str, Any]]) -> Workflow:
    doc = wf.model_dump(mode="json", exclude_none=True)
    doc["triggers"] = triggers
    return load_workflow(doc)


async def stored(session: AsyncSession, row: WorkflowRow) -> dict[str, TriggerRow]:
    return {r.id: r for r in await workflows.trigger_rows(session, row.id)}


async def list_triggers(session: AsyncSession, name: str,
                        who: Principal | None = None) -> list[TriggerPublic]:
    row = await workflows.get_row(session, name, who)
    rows = await stored(session, row)
    return [public(row, t, rows.get(t.id or "")) for t in workflows.spec_of(row).triggers]


async def get_trigger(session: AsyncSession, name: str, trigger_id: str,
                      who: Principal | None = None) -> TriggerPublic:
    row = await workflows.get_row(session, name, who)
    wf = workflows.spec_of(row)
    trigger = wf.triggers[find(wf, trigger_id)]
    return public(row, trigger, (await stored(session, row)).get(trigger_id), detail=True)


async def create_trigger(session: AsyncSession, target: PrefectTarget, settings: ApiSettings,
                         name: str, body: dict[str, Any],
                         who: Principal | None = None) -> TriggerPublic:
    """Add a trigger. A webhook's answer carries its `secret`: the only time it is shown."""
    row = await workflows.get_row(session, name, who)
    wf = workflows.spec_of(row)
    if body.get("id") is not None:
        raise SpecError([{"field": "id", "message": "trigger ids are assigned by FlowForge"}])
    index = len(wf.triggers)
    try:
        trigger = _ADAPTER.validate_python(body)
    except ValidationError as exc:
        raise SpecError([{"field": f"triggers[{index}]." + ".".join(
            str(p) for p in e["loc"] if p != body.get("type")), "message": e["msg"]}
            for e in exc.errors()]) from exc
    before = {t.id for t in wf.triggers}
    new = wf.model_copy(update={"triggers": [*wf.triggers, trigger]})
    new = await workflows.check_triggers(session, _validated(new, [
        t.model_dump(mode="json", exclude_none=True) for t in new.triggers]), row, who)
    added = next(t for t in new.triggers if t.id not in before)
    secret = hook_keys.new_secret() if added.type == "webhook" else None
    secrets = {added.id or "": hook_keys.seal(settings, secret)} if secret else {}
    row = await workflows.replace(session, target, row, new, secrets, who=who)
    return public(row, added, None, secret=secret, detail=True)


async def patch_trigger(session: AsyncSession, target: PrefectTarget, name: str, trigger_id: str,
                        changes: dict[str, Any], who: Principal | None = None) -> TriggerPublic:
    row = await workflows.get_row(session, name, who)
    wf = workflows.spec_of(row)
    i = find(wf, trigger_id)
    for fixed in ("id", "type"):
        if fixed in changes and changes[fixed] != getattr(wf.triggers[i], fixed):
            raise SpecError([{"field": f"triggers[{i}].{fixed}",
                              "message": f"a trigger's {fixed} cannot change; delete it and "
                                         "create another"}])
    docs = [t.model_dump(mode="json", exclude_none=True) for t in wf.triggers]
    docs[i] = {**docs[i], **changes}
    row = await workflows.replace(session, target, row, _validated(wf, docs), who=who)
    wf = workflows.spec_of(row)
    return public(row, wf.triggers[find(wf, trigger_id)],
                  (await stored(session, row)).get(trigger_id), detail=True)


async def delete_trigger(session: AsyncSession, target: PrefectTarget, name: str,
                         trigger_id: str, who: Principal | None = None) -> None:
    """Remove the trigger; the sync deletes its Prefect schedule or automation."""
    row = await workflows.get_row(session, name, who)
    wf = workflows.spec_of(row)
    i = find(wf, trigger_id)
    new = wf.model_copy(update={"triggers": [t for j, t in enumerate(wf.triggers) if j != i]})
    await workflows.replace(session, target, row, new, who=who)


async def rotate_secret(session: AsyncSession, settings: ApiSettings, name: str,
                        trigger_id: str, who: Principal | None = None,
                        rotation: SecretRotation | None = None) -> TriggerPublic:
    """Set a new webhook secret and show it, once, when it was made here; the previous one
    stays valid for `rotation.keep_previous_seconds`.

    Also how a webhook defined in a document gets its first secret.
    """
    rotation = rotation or SecretRotation()
    row = await workflows.get_row(session, name, who)
    wf = workflows.spec_of(row)
    trigger = wf.triggers[find(wf, trigger_id)]
    if trigger.type != "webhook":
        raise SpecError([{"field": "type", "message": f"trigger '{trigger_id}' is a "
                          f"{trigger.type} trigger; only webhooks have secrets"}])
    secret = rotation.secret or hook_keys.new_secret()
    row_of_trigger = (await stored(session, row))[trigger_id]
    if row_of_trigger.secret and rotation.keep_previous_seconds:
        row_of_trigger.previous_secret = row_of_trigger.secret
        row_of_trigger.previous_until = utcnow() + timedelta(
            seconds=rotation.keep_previous_seconds)
    else:
        row_of_trigger.previous_secret = row_of_trigger.previous_until = None
    row_of_trigger.secret = hook_keys.seal(settings, secret)
    session.add(row_of_trigger)
    await session.commit()
    return public(row, trigger, row_of_trigger,
                  secret=None if rotation.secret else secret)


__all__ = ["create_trigger", "delete_trigger", "find", "get_trigger", "list_triggers",
           "patch_trigger", "public", "rotate_secret", "stored"]
