"""/workflows/{name}/triggers: the `triggers:` of a workflow document, one at a time."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from api.deps import Editor, Reader, SessionDep, SettingsDep, TargetDep
from api.schemas.common import errors
from api.schemas.triggers import SecretRotation, TriggerPatch, TriggerPublic
from api.services import triggers

router = APIRouter(prefix="/workflows/{name}/triggers", tags=["triggers"])
ERRORS = errors(401, 403, 404, 409, 422)


@router.get("", response_model=list[TriggerPublic], responses=ERRORS)
async def list_triggers(name: str, session: SessionDep, who: Reader) -> list[TriggerPublic]:
    return await triggers.list_triggers(session, name, who)


@router.post("", status_code=201, response_model=TriggerPublic, responses=ERRORS)
async def create_trigger(name: str, body: dict[str, Any], session: SessionDep,
                         target: TargetDep, settings: SettingsDep, who: Editor) -> TriggerPublic:
    """Add a trigger. A webhook's answer carries its `secret`: the only time it is shown."""
    return await triggers.create_trigger(session, target, settings, name, body, who)


@router.get("/{trigger_id}", response_model=TriggerPublic, responses=ERRORS)
async def get_trigger(name: str, trigger_id: str, session: SessionDep,
                      who: Reader) -> TriggerPublic:
    return await triggers.get_trigger(session, name, trigger_id, who)


@router.patch("/{trigger_id}", response_model=TriggerPublic, responses=ERRORS)
async def patch_trigger(name: str, trigger_id: str, body: TriggerPatch, session: SessionDep,
                        target: TargetDep, who: Editor) -> TriggerPublic:
    return await triggers.patch_trigger(session, target, name, trigger_id,
                                        body.model_dump(exclude_unset=True), who)


@router.delete("/{trigger_id}", status_code=204, responses=ERRORS)
async def delete_trigger(name: str, trigger_id: str, session: SessionDep,
                         target: TargetDep, who: Editor) -> Response:
    """Remove the trigger; the sync deletes its Prefect schedule or automation."""
    await triggers.delete_trigger(session, target, name, trigger_id, who)
    return Response(status_code=204)


@router.post("/{trigger_id}/secret", response_model=TriggerPublic, responses=ERRORS)
async def rotate_secret(name: str, trigger_id: str, session: SessionDep,
                        settings: SettingsDep, who: Editor,
                        body: SecretRotation | None = None) -> TriggerPublic:
    """Set a new webhook secret and show it, once (unless you gave it); the previous one stays
    valid for `keep_previous_seconds` (default a day), so senders can move over.

    Also how a webhook defined in a document gets its first secret.
    """
    return await triggers.rotate_secret(session, settings, name, trigger_id, who,
                                        body or SecretRotation())
