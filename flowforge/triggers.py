"""Trigger definitions: what starts a workflow besides a manual run.

Every trigger fires the workflow on its own (OR logic, as in Airflow). This release stores all
four kinds and turns schedules into Prefect deployment schedules; dependency, webhook and event
triggers are stored and validated but not yet wired to Prefect automations.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str | None = None
    enabled: bool = True


class ScheduleTrigger(_Trigger):
    type: Literal["schedule"] = "schedule"
    cron: str
    timezone: str = "UTC"
    inputs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        try:
            croniter(value, datetime(2000, 1, 1))
        except (ValueError, KeyError) as exc:
            raise ValueError(f"invalid cron expression '{value}': {exc}") from exc
        return value

    @field_validator("timezone")
    @classmethod
    def _tz(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown timezone '{value}' (expected an IANA name)") from exc
        return value


class DependencyTrigger(_Trigger):
    type: Literal["dependency"] = "dependency"
    upstream: Annotated[list[str], Field(min_length=1)]
    on: Literal["success", "failure", "completion"] = "success"
    logic: Literal["all", "any"] = "any"
    within: Annotated[float, Field(gt=0)] = 86400


class WebhookTrigger(_Trigger):
    type: Literal["webhook"] = "webhook"
    inputs: dict[str, Any] = Field(default_factory=dict)


class EventTrigger(_Trigger):
    type: Literal["event"] = "event"
    event: str
    match: dict[str, Any] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)


Trigger = Annotated[
    ScheduleTrigger | DependencyTrigger | WebhookTrigger | EventTrigger,
    Field(discriminator="type"),
]

__all__ = ["DependencyTrigger", "EventTrigger", "ScheduleTrigger", "Trigger", "WebhookTrigger"]
