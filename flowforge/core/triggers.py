"""Trigger definitions: what starts a workflow besides a manual run.

Every trigger fires the workflow on its own (OR logic, as in Airflow). Triggers live in the
workflow document; each has a stable `id` (assigned by FlowForge when it is first stored and
kept across document replacements) because Prefect objects are keyed by it: a schedule's slug,
an automation's name, a webhook's URL. Keeping ids stable is what lets the sync touch only the
trigger that changed. See flowforge.controlplane.triggers for how each kind becomes Prefect
objects.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from pydantic import BaseModel, ConfigDict, Field, field_validator

TRIGGER_TYPES = ("schedule", "dependency", "webhook", "event")


class _Trigger(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: Annotated[str | None, Field(max_length=36, pattern=r"^[A-Za-z0-9_-]+$")] = None
    name: Annotated[str | None, Field(max_length=100)] = None
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
    # Seconds within which every upstream must have finished (logic: all); default 24 h.
    within: Annotated[float, Field(gt=0)] = 86400
    inputs: dict[str, Any] = Field(default_factory=dict)

    @field_validator("upstream")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("an upstream workflow is listed twice")
        return value


class WebhookTrigger(_Trigger):
    type: Literal["webhook"] = "webhook"
    # Whose signature scheme deliveries carry: FlowForge's own, or the sender's, verified
    # natively so the service can call FlowForge directly (api/services/signatures.py).
    verify: Literal["flowforge", "github", "stripe", "slack"] = "flowforge"
    # Templates over `body`, `headers` and `query` of the delivery, rendered by the API.
    inputs: dict[str, Any] = Field(default_factory=dict)


class EventTrigger(_Trigger):
    type: Literal["event"] = "event"
    event: Annotated[str, Field(min_length=1)]
    # Labels the event's resource must carry (Prefect's `match`), e.g. {"prefect.resource.id": "x"}.
    match: dict[str, str | list[str]] = Field(default_factory=dict)
    inputs: dict[str, Any] = Field(default_factory=dict)


AnyTrigger = ScheduleTrigger | DependencyTrigger | WebhookTrigger | EventTrigger
Trigger = Annotated[AnyTrigger, Field(discriminator="type")]


def next_fire_times(trigger: ScheduleTrigger, count: int = 5,
                    after: datetime | None = None) -> list[datetime]:
    """The next `count` times the schedule fires, in its own timezone (DST-aware)."""
    tz = ZoneInfo(trigger.timezone)
    start = (after or datetime.now(tz)).astimezone(tz)
    it = croniter(trigger.cron, start)
    return [it.get_next(datetime) for _ in range(count)]


def config_key(trigger: AnyTrigger) -> str:
    """What a trigger does, without its id/name/enabled: matches an id-less trigger to a stored one."""
    return trigger.model_dump_json(exclude={"id", "name", "enabled"})


def assign_ids(triggers: list[AnyTrigger], stored: Iterable[tuple[str, str, str | None, str]],
               new_id: Any = None) -> list[AnyTrigger]:
    """Give every trigger an id and a name, keeping the ids of triggers already stored.

    `stored` is `(id, type, name, config_key)` of the workflow's current triggers. A trigger
    without an id takes the id of a stored one with the same type and name, else of one that
    does the same thing, else a new id: so PUTting a document fetched before ids existed (or
    written by hand) does not re-create every schedule, automation and webhook URL.
    """
    make = new_id or (lambda: str(uuid.uuid4()))
    pool = list(stored)
    taken = {t.id for t in triggers if t.id}
    out: list[AnyTrigger] = []
    for i, trigger in enumerate(triggers):
        tid = trigger.id
        if tid is None:
            key = config_key(trigger)
            match = next((s for s in pool if s[0] not in taken and s[1] == trigger.type
                          and trigger.name is not None and s[2] == trigger.name), None)
            match = match or next((s for s in pool if s[0] not in taken and s[1] == trigger.type
                                   and s[3] == key), None)
            tid = match[0] if match else make()
            taken.add(tid)
        name = trigger.name or f"{trigger.type}-{i + 1}"
        out.append(trigger.model_copy(update={"id": tid, "name": name}))
    return out


def duplicate_problems(triggers: list[AnyTrigger]) -> list[dict[str, Any]]:
    """Ids and names must be unique within a workflow: both address a trigger."""
    problems: list[dict[str, Any]] = []
    for attr in ("id", "name"):
        seen: set[str] = set()
        for i, trigger in enumerate(triggers):
            value = getattr(trigger, attr)
            if value is None:
                continue
            if value in seen:
                problems.append({"field": f"triggers[{i}].{attr}",
                                 "message": f"trigger {attr} '{value}' is used twice"})
            seen.add(value)
    return problems


def find_cycle(edges: dict[str, set[str]], start: str) -> list[str] | None:
    """A path start -> ... -> start in `edges` (workflow -> the upstreams it runs after), if any."""
    stack: list[tuple[str, list[str]]] = [(start, [start])]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        for upstream in sorted(edges.get(node, ())):
            if upstream == start:
                return [*path, start]
            if upstream not in seen:
                seen.add(upstream)
                stack.append((upstream, [*path, upstream]))
    return None


__all__ = [
    "TRIGGER_TYPES",
    "AnyTrigger",
    "DependencyTrigger",
    "EventTrigger",
    "ScheduleTrigger",
    "Trigger",
    "WebhookTrigger",
    "assign_ids",
    "config_key",
    "duplicate_problems",
    "find_cycle",
    "next_fire_times",
]
