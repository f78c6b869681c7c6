"""POST /hooks/{trigger_id}: a signed webhook delivery starts the workflow.

The size limit comes first, before the body is read whole: an oversized request costs nothing.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Request

from api.deps import SessionDep, SettingsDep, TargetDep
from api.schemas.common import errors
from api.schemas.triggers import HookAccepted
from api.services import webhooks
from flowforge.core.errors import PayloadTooLargeError

router = APIRouter(tags=["webhooks"])
MAX_BODY = 1024 * 1024


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


@router.post("/hooks/{trigger_id}", status_code=202, response_model=HookAccepted,
             responses=errors(401, 404, 413, 422, 503))
async def receive(
    trigger_id: str, request: Request, session: SessionDep, target: TargetDep,
    settings: SettingsDep,
    x_flowforge_signature: Annotated[str | None, Header()] = None,
    x_flowforge_delivery: Annotated[str | None, Header(max_length=200)] = None,
) -> HookAccepted:
    body = await _body(request)
    return await webhooks.accept(session, target, settings, request.app.state.dispatcher,
                                 trigger_id, body, request.headers, request.query_params,
                                 x_flowforge_signature, x_flowforge_delivery)


__all__ = ["MAX_BODY", "router"]
