"""POST /events: emit a Prefect event, which event triggers (Prefect automations) react to.

The event goes to Prefect's own events endpoint through Prefect's events client, so what
fires a workflow is exactly Prefect's automation matching; FlowForge adds nothing in between.
"""

from __future__ import annotations

from fastapi import APIRouter
from prefect.events import Event
from prefect.events.clients import PrefectEventsClient
from websockets.exceptions import WebSocketException

from api.deps import TargetDep
from api.schemas import ErrorBody
from api.trigger_schemas import EventAccepted, EventIn
from flowforge.errors import PrefectUnavailableError

router = APIRouter(tags=["events"])


@router.post("/events", status_code=202, response_model=EventAccepted,
             responses={422: {"model": ErrorBody}, 503: {"model": ErrorBody}})
async def emit(body: EventIn, target: TargetDep) -> EventAccepted:
    resource = {"prefect.resource.id": "flowforge.api", **body.resource}
    event = Event(event=body.event, resource=resource, payload=body.payload)
    try:
        async with PrefectEventsClient(api_url=target.api_url, reconnection_attempts=1) as client:
            await client.emit(event)
    except (OSError, TimeoutError, WebSocketException) as exc:
        raise PrefectUnavailableError(f"cannot emit the event to Prefect: {exc}") from exc
    return EventAccepted(id=str(event.id), event=event.event)
