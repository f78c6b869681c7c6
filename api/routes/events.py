"""POST /events: emit a Prefect event, which event triggers (Prefect automations) react to.

The event goes to Prefect's own events endpoint through Prefect's events client, so what
fires a workflow is exactly Prefect's automation matching; FlowForge adds nothing in between.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Runner, TargetDep
from api.schemas.common import errors
from api.schemas.triggers import EventAccepted, EventIn
from api.services.store import namespace_of
from flowforge.controlplane import store
from flowforge.controlplane.triggers import NAMESPACE_LABEL

router = APIRouter(tags=["events"])


@router.post("/events", status_code=202, response_model=EventAccepted, responses=errors(422, 503))
async def emit(body: EventIn, target: TargetDep, who: Runner) -> EventAccepted:
    """The event carries the namespace it was emitted in (`flowforge.namespace`): event
    triggers of other namespaces do not fire on it."""
    namespace = namespace_of(who, body.namespace)
    resource = {"prefect.resource.id": "flowforge.api", **body.resource,
                NAMESPACE_LABEL: namespace}
    event_id = await store.emit_event(target, body.event, resource, body.payload)
    return EventAccepted(id=event_id, event=body.event)
