"""/workflows/{name}/triggers: the `triggers:` of a workflow document, one at a time.

A trigger is part of its workflow's document, so every change here is a document change:
validated whole (including cross-workflow rules), stored in one transaction, then synced.
The sync diffs by trigger id, so changing one trigger touches only its own Prefect object.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Response
from pydantic import TypeAdapter, ValidationError

from api import crud, hook_keys
from api.deps import SessionDep, SettingsDep, TargetDep
from api.schemas import ErrorBody
from api.tables import TriggerRow, WorkflowRow
from api.trigger_schemas import TriggerPatch, TriggerPublic
from flowforge.errors import NotFoundError, SpecError
from flowforge.spec import Workflow, load_workflow
from flowforge.triggers import AnyTrigger, ScheduleTrigger, Trigger, next_fire_times

router = APIRouter(prefix="/workflows/{name}/triggers", tags=["triggers"])
ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorBody}, 409: {"model": ErrorBody}, 422: {"model": ErrorBody},
}
_ADAPTER: TypeAdapter[AnyTrigger] = TypeAdapter(Trigger)


def _public(row: WorkflowRow, trigger: AnyTrigger, stored: TriggerRow | None,
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


def _find(wf: Workflow, trigger_id: str) -> int:
    for i, t in enumerate(wf.triggers):
        if t.id == trigger_id:
            return i
    raise NotFoundError(f"workflow '{wf.name}' has no trigger '{trigger_id}'",
                        details={"workflow": wf.name, "trigger": trigger_id})


def _validated(wf: Workflow, triggers: list[dict[str, Any]]) -> Workflow:
    doc = wf.model_dump(mode="json", exclude_none=True)
    doc["triggers"] = triggers
    return load_workflow(doc)


async def _save(session: SessionDep, target: TargetDep, row: WorkflowRow, wf: Workflow,
                secrets: dict[str, str] | None = None) -> WorkflowRow:
    row = await crud.store(session, wf, row, secrets)
    return await crud.sync_row(session, row, target)


async def _stored(session: SessionDep, row: WorkflowRow) -> dict[str, TriggerRow]:
    return {r.id: r for r in await crud.trigger_rows(session, row.id)}


@router.get("", response_model=list[TriggerPublic], responses=ERRORS)
async def list_triggers(name: str, session: SessionDep) -> list[TriggerPublic]:
    row = await crud.get_row(session, name)
    stored = await _stored(session, row)
    return [_public(row, t, stored.get(t.id or "")) for t in crud.spec_of(row).triggers]


@router.post("", status_code=201, response_model=TriggerPublic, responses=ERRORS)
async def create_trigger(name: str, body: dict[str, Any], session: SessionDep,
                         target: TargetDep, settings: SettingsDep) -> TriggerPublic:
    """Add a trigger. A webhook's answer carries its `secret`: the only time it is shown."""
    row = await crud.get_row(session, name)
    wf = crud.spec_of(row)
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
    new = crud.spec_of(row).model_copy(update={"triggers": [*wf.triggers, trigger]})
    new = await crud.check_triggers(session, _validated(new, [
        t.model_dump(mode="json", exclude_none=True) for t in new.triggers]), row)
    added = next(t for t in new.triggers if t.id not in before)
    secret = hook_keys.new_secret() if added.type == "webhook" else None
    secrets = {added.id or "": hook_keys.seal(settings, secret)} if secret else {}
    row = await _save(session, target, row, new, secrets)
    return _public(row, added, None, secret=secret, detail=True)


@router.get("/{trigger_id}", response_model=TriggerPublic, responses=ERRORS)
async def get_trigger(name: str, trigger_id: str, session: SessionDep) -> TriggerPublic:
    row = await crud.get_row(session, name)
    wf = crud.spec_of(row)
    trigger = wf.triggers[_find(wf, trigger_id)]
    return _public(row, trigger, (await _stored(session, row)).get(trigger_id), detail=True)


@router.patch("/{trigger_id}", response_model=TriggerPublic, responses=ERRORS)
async def patch_trigger(name: str, trigger_id: str, body: TriggerPatch, session: SessionDep,
                        target: TargetDep) -> TriggerPublic:
    row = await crud.get_row(session, name)
    wf = crud.spec_of(row)
    i = _find(wf, trigger_id)
    changes = body.model_dump(exclude_unset=True)
    for fixed in ("id", "type"):
        if fixed in changes and changes[fixed] != getattr(wf.triggers[i], fixed):
            raise SpecError([{"field": f"triggers[{i}].{fixed}",
                              "message": f"a trigger's {fixed} cannot change; delete it and "
                                         "create another"}])
    docs = [t.model_dump(mode="json", exclude_none=True) for t in wf.triggers]
    docs[i] = {**docs[i], **changes}
    new = _validated(wf, docs)
    row = await _save(session, target, row, new)
    wf = crud.spec_of(row)
    return _public(row, wf.triggers[_find(wf, trigger_id)],
                   (await _stored(session, row)).get(trigger_id), detail=True)


@router.delete("/{trigger_id}", status_code=204, responses=ERRORS)
async def delete_trigger(name: str, trigger_id: str, session: SessionDep,
                         target: TargetDep) -> Response:
    """Remove the trigger; the sync deletes its Prefect schedule or automation."""
    row = await crud.get_row(session, name)
    wf = crud.spec_of(row)
    i = _find(wf, trigger_id)
    new = wf.model_copy(update={"triggers": [t for j, t in enumerate(wf.triggers) if j != i]})
    await _save(session, target, row, new)
    return Response(status_code=204)


@router.post("/{trigger_id}/secret", response_model=TriggerPublic, responses=ERRORS)
async def rotate_secret(name: str, trigger_id: str, session: SessionDep, target: TargetDep,
                        settings: SettingsDep) -> TriggerPublic:
    """Set a new webhook secret (the old one stops working) and show it, once.

    Also how a webhook defined in a document gets its first secret.
    """
    row = await crud.get_row(session, name)
    wf = crud.spec_of(row)
    trigger = wf.triggers[_find(wf, trigger_id)]
    if trigger.type != "webhook":
        raise SpecError([{"field": "type", "message": f"trigger '{trigger_id}' is a "
                          f"{trigger.type} trigger; only webhooks have secrets"}])
    secret = hook_keys.new_secret()
    stored = (await _stored(session, row))[trigger_id]
    stored.secret = hook_keys.seal(settings, secret)
    session.add(stored)
    await session.commit()
    return _public(row, trigger, stored, secret=secret)


def trigger_config(row: TriggerRow) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(row.config)
    return data


__all__ = ["router", "trigger_config"]
