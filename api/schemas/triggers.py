"""Request and response models of triggers, webhooks and events."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field


class TriggerPublic(BaseModel):
    id: str
    type: str
    name: str
    enabled: bool
    workflow: str
    config: dict[str, Any] = Field(description="The trigger as it stands in the workflow document")
    url: str | None = Field(None, description="Webhooks: where to POST deliveries")
    secret: str | None = Field(None, description="Webhooks: the HMAC key; only in the answer "
                                                 "that created or rotated it")
    secret_set: bool | None = Field(None, description="Webhooks: whether a secret exists")
    next_runs: list[datetime] | None = Field(None, description="Schedules: next five fire times")
    sync: str = Field(description="The workflow's Prefect sync status after the change")


class TriggerPatch(BaseModel):
    """Fields to change; anything not given stays. `type` and `id` cannot change."""

    model_config = {"extra": "allow"}
    enabled: bool | None = None
    name: str | None = None


class SecretRotation(BaseModel):
    """How to rotate a webhook's secret."""

    secret: str | None = Field(None, min_length=16, max_length=200, description=(
        "the new secret, when the sender makes it (Stripe's and Slack's signing secrets); "
        "default: a new random one, shown once in the answer"))
    keep_previous_seconds: int = Field(86400, ge=0, le=30 * 86400, description=(
        "how long the secret being replaced stays valid, so senders can move over "
        "(0: it stops working now)"))


class HookAccepted(BaseModel):
    status: Literal["started", "queued"] = Field(
        description="`queued`: stored, its run is created as soon as Prefect takes it (the same "
                    "delivery id again answers with the run id once it exists)")
    run_id: str | None
    delivery_id: str
    workflow: str
    prefect_ui_url: str | None


class EventIn(BaseModel):
    event: str = Field(min_length=1, max_length=1024)
    resource: dict[str, str] = Field(default_factory=dict, description="Resource labels; "
                                     "`prefect.resource.id` defaults to `flowforge.api`")
    payload: dict[str, Any] = Field(default_factory=dict)
    namespace: str = Field("default", max_length=63,
                           description="only event triggers of this namespace match the event")


class EventAccepted(BaseModel):
    id: str
    event: str


class DriftItem(BaseModel):
    name: str
    drift: list[str]


class DriftReport(BaseModel):
    in_sync: bool
    workflows: list[DriftItem]
