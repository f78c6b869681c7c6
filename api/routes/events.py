"""POST /events: emit a Prefect event, which event triggers (Prefect automations) react to.

The event goes to Prefect's own events endpoint through Prefect's events client, so what
fires a workflow is exactly Prefect's automation matching; FlowForge adds nothing in between.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import TargetDep
from api.schemas.common import errors
from api.schemas.triggers import EventAccepted, EventIn
from flowforge.controlplane import store

router = APIRouter(tags=["events"])


@router.post("/events", status_code=202, response_model=EventAccepted, responses=errors(422, 503))
async def emit(body: EventIn, target: TargetDep) -> EventAccepted:
    resource = {"prefect.resource.id": "flowforge.api", **body.resource}
    event_id = await store.emit_event(target, body.event, resource, body.payload)
    return EventAccepted(id=event_id, event=body.event)
