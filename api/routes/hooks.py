"""POST /hooks/{trigger_id}: a signed webhook delivery starts the workflow.

The size limit (the BodyLimit middleware) comes first, before the body is read whole: an
oversized request costs nothing. No API key: the signature is the credential.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from api.deps import LimitsDep, Public, SessionDep, SettingsDep, TargetDep
from api.schemas.common import errors
from api.schemas.triggers import HookAccepted
from api.services import webhooks

router = APIRouter(tags=["webhooks"])


@router.post("/hooks/{trigger_id}", status_code=202, response_model=HookAccepted,
             responses=errors(401, 404, 413, 422, 429, 503), dependencies=[Public])
async def receive(
    trigger_id: str, request: Request, session: SessionDep, target: TargetDep,
    settings: SettingsDep, limits: LimitsDep,
) -> HookAccepted:
    """Signed as the trigger's `verify` says: FlowForge's `X-FlowForge-Timestamp`,
    `X-FlowForge-Delivery` and `X-FlowForge-Signature` by default, or GitHub's, Stripe's or
    Slack's own headers."""
    body = await request.body()
    return await webhooks.accept(session, target, settings, request.app.state.dispatcher,
                                 trigger_id, body, request.headers, request.query_params,
                                 lambda: limits.hit(limits.hooks, trigger_id))


__all__ = ["router"]
