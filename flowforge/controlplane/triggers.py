"""Triggers -> Prefect schedules and automations, one trigger at a time.

Each trigger owns at most one Prefect object, named by its id, so the sync can diff what
FlowForge wants against what Prefect has and touch only what differs:

* schedule   -> a deployment schedule with `slug = trigger id` (active iff enabled);
* dependency -> an automation `flowforge:{workflow}:{trigger id}` whose trigger matches
  `prefect.flow-run.Completed` / `Failed` / `Crashed` events related to the upstream
  deployment(s) by name (one EventTrigger for `any`, a CompoundTrigger `require: all` with a
  `within` window for `all`) and whose action is RunDeployment on the workflow's deployment;
* event      -> an automation on the named event and resource labels, and the workflow's
  namespace (`flowforge.namespace`, which POST /events puts on every event);
* webhook    -> nothing in Prefect: the API receives the POST and creates the run itself.

Matching upstreams by deployment *name* (deployment name = workflow name) rather than id keeps
a downstream automation valid when the upstream's deployment is re-created by a later sync.
`diff()` never writes, so the same code answers `flowforge sync --check` (drift) and repairs it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.schedules import CronSchedule
from prefect.events.actions import RunDeployment
from prefect.events.schemas.automations import (
    Automation,
    AutomationCore,
    CompoundTrigger,
    EventTrigger,
    Posture,
)

from flowforge.core.triggers import AnyTrigger, DependencyTrigger, ScheduleTrigger
from flowforge.core.triggers import EventTrigger as FFEventTrigger
from flowforge.core.workflow import Workflow

PREFIX = "flowforge:"
EVENTS = {
    "success": ["prefect.flow-run.Completed"],
    "failure": ["prefect.flow-run.Failed", "prefect.flow-run.Crashed"],
    "completion": ["prefect.flow-run.Completed", "prefect.flow-run.Failed",
                   "prefect.flow-run.Crashed"],
}
# Rendered by Prefect when the automation fires: every event of the firing (one per upstream
# for a compound trigger), so the downstream run can read each upstream run's outputs.
#: The resource label POST /events puts on every event: the namespace it was emitted in.
NAMESPACE_LABEL = "flowforge.namespace"
UPSTREAM_RUNS = "{% for e in events %}{{ e.resource.id }} {% endfor %}"


def automation_name(workflow: str, trigger_id: str) -> str:
    return f"{PREFIX}{workflow}:{trigger_id}"


def trigger_parameter(trigger: AnyTrigger) -> dict[str, Any]:
    """The `flowforge_trigger` flow parameter: what the run records as having started it."""
    out: dict[str, Any] = {"id": trigger.id, "type": trigger.type, "name": trigger.name}
    if isinstance(trigger, ScheduleTrigger):
        out.update(cron=trigger.cron, timezone=trigger.timezone)
    elif isinstance(trigger, DependencyTrigger):
        out.update(on=trigger.on, logic=trigger.logic, upstream_workflows=list(trigger.upstream),
                   upstream_runs=UPSTREAM_RUNS)
    elif isinstance(trigger, FFEventTrigger):
        out.update(event=trigger.event, event_id="{{ event.id|string }}")
    return out


def desired_schedules(wf: Workflow) -> dict[str, DeploymentScheduleCreate]:
    return {
        t.id or "": DeploymentScheduleCreate(
            schedule=CronSchedule(cron=t.cron, timezone=t.timezone), active=t.enabled,
            parameters={**t.inputs, "flowforge_trigger": trigger_parameter(t)}, slug=t.id)
        for t in wf.triggers if isinstance(t, ScheduleTrigger)
    }


def _dependency_trigger(t: DependencyTrigger) -> EventTrigger | CompoundTrigger:
    def one(names: list[str]) -> EventTrigger:
        return EventTrigger(
            expect=set(EVENTS[t.on]),
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "deployment",
                           "prefect.resource.name": names[0] if len(names) == 1 else names},
            posture=Posture.Reactive, threshold=1, within=timedelta(0))
    if t.logic == "any" or len(t.upstream) == 1:
        return one(list(t.upstream))
    return CompoundTrigger(triggers=[one([u]) for u in t.upstream], require="all",
                           within=timedelta(seconds=t.within))


def desired_automations(wf: Workflow, deployment_id: UUID) -> dict[str, AutomationCore]:
    out: dict[str, AutomationCore] = {}
    for t in wf.triggers:
        trigger: EventTrigger | CompoundTrigger
        if isinstance(t, DependencyTrigger):
            trigger = _dependency_trigger(t)
        elif isinstance(t, FFEventTrigger):
            # Only events emitted in the workflow's own namespace (POST /events labels each):
            # a key of another namespace must not be able to start this workflow.
            trigger = EventTrigger(expect={t.event},
                                   match={**t.match, NAMESPACE_LABEL: wf.ns},
                                   posture=Posture.Reactive, threshold=1, within=timedelta(0))
        else:
            continue
        name = automation_name(wf.name, t.id or "")
        out[name] = AutomationCore(
            name=name, description=f"FlowForge {t.type} trigger '{t.name}' of workflow "
                                   f"'{wf.name}'; managed by FlowForge, edits are reverted",
            enabled=t.enabled, tags=["flowforge"], trigger=trigger,
            actions=[RunDeployment(source="selected", deployment_id=deployment_id,
                                   parameters={**t.inputs, "flowforge_trigger":
                                               trigger_parameter(t)})],
            actions_on_trigger=[], actions_on_resolve=[])
    return out


def _strip_ids(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _strip_ids(v) for k, v in value.items() if k != "id"}
    if isinstance(value, list):
        items = [_strip_ids(v) for v in value]
        # sets (expect, tags) come back from the server in any order
        return sorted(items) if all(isinstance(i, str) for i in items) else items
    return value


def automation_view(a: AutomationCore) -> dict[str, Any]:
    """What of an automation FlowForge sets, comparable with what the server returns."""
    data = a.model_dump(mode="json", include={"name", "description", "enabled", "trigger",
                                              "actions", "actions_on_trigger",
                                              "actions_on_resolve"})
    view: dict[str, Any] = _strip_ids(data)
    return view


def _schedule_view(s: Any) -> dict[str, Any]:
    sched = s.schedule
    return {"cron": getattr(sched, "cron", None), "timezone": getattr(sched, "timezone", None),
            "kind": type(sched).__name__, "active": s.active, "parameters": s.parameters}


@dataclass
class Plan:
    """What it takes to bring one workflow's Prefect objects in line; empty = no drift."""

    create_schedules: list[DeploymentScheduleCreate] = field(default_factory=list)
    update_schedules: list[tuple[UUID, DeploymentScheduleCreate]] = field(default_factory=list)
    delete_schedules: list[UUID] = field(default_factory=list)
    create_automations: list[AutomationCore] = field(default_factory=list)
    update_automations: list[tuple[UUID, AutomationCore]] = field(default_factory=list)
    delete_automations: list[UUID] = field(default_factory=list)
    drift: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.drift)


async def flowforge_automations(client: PrefectClient) -> list[Automation]:
    """Every FlowForge automation on the server.

    One `read_automations` call answers at most the server's default limit (200 unless the
    operator set another) and cannot filter by name prefix, so a server with more automations
    than that hid some: a deleted workflow's automation could survive (and keep firing) and
    drift went unreported. Pages are read until one comes back empty, whatever the
    server's limit is.
    """
    found: list[Automation] = []
    offset = 0
    while page := await client.read_automations(offset=offset):
        found += [a for a in page if a.name.startswith(PREFIX)]
        offset += len(page)
    return found


async def diff(client: PrefectClient, wf: Workflow, deployment_id: UUID,
               automations: list[Automation] | None = None) -> Plan:
    """Compare the workflow's triggers with its Prefect schedules and automations (no writes)."""
    plan = Plan()
    want = desired_schedules(wf)
    have = await client.read_deployment_schedules(deployment_id)
    seen: set[str] = set()
    for s in have:
        slug = s.slug or ""
        if slug not in want or slug in seen:
            plan.delete_schedules.append(s.id)
            plan.drift.append(f"schedule {slug or s.id} is in Prefect but not in FlowForge")
            continue
        seen.add(slug)
        if _schedule_view(s) != _schedule_view(want[slug]):
            plan.update_schedules.append((s.id, want[slug]))
            plan.drift.append(f"schedule of trigger {slug} differs in Prefect")
    for slug, create in want.items():
        if slug not in seen:
            plan.create_schedules.append(create)
            plan.drift.append(f"schedule of trigger {slug} is missing in Prefect")

    wanted = desired_automations(wf, deployment_id)
    mine = [a for a in (automations if automations is not None
                        else await flowforge_automations(client))
            if a.name.startswith(f"{PREFIX}{wf.name}:")]
    found: set[str] = set()
    for a in mine:
        if a.name not in wanted or a.name in found:
            plan.delete_automations.append(a.id)
            plan.drift.append(f"automation {a.name} is in Prefect but not in FlowForge")
            continue
        found.add(a.name)
        if automation_view(a) != automation_view(wanted[a.name]):
            plan.update_automations.append((a.id, wanted[a.name]))
            plan.drift.append(f"automation {a.name} differs in Prefect")
    for name, core in wanted.items():
        if name not in found:
            plan.create_automations.append(core)
            plan.drift.append(f"automation {name} is missing in Prefect")
    return plan


async def apply(client: PrefectClient, deployment_id: UUID, plan: Plan) -> None:
    """Carry out a plan. Deletions go last so a failure half-way never leaves a gap."""
    if plan.create_schedules:
        await client.create_deployment_schedules(deployment_id, plan.create_schedules)
    for sid, s in plan.update_schedules:
        await client.update_deployment_schedule(deployment_id, sid, active=s.active,
                                                schedule=s.schedule, parameters=s.parameters,
                                                slug=s.slug)
    for a in plan.create_automations:
        await client.create_automation(a)
    for aid, a in plan.update_automations:
        await client.update_automation(aid, a)
    for sid in plan.delete_schedules:
        await client.delete_deployment_schedule(deployment_id, sid)
    for aid in plan.delete_automations:
        await client.delete_automation(aid)


async def delete_workflow_automations(client: PrefectClient, workflow: str) -> int:
    """Deleting a deployment leaves its automations firing in Prefect, so they go first."""
    doomed = [a for a in await flowforge_automations(client)
              if a.name.startswith(f"{PREFIX}{workflow}:")]
    for a in doomed:
        await client.delete_automation(a.id)
    return len(doomed)


def orphans(automations: list[Automation], workflows: set[str]) -> list[Automation]:
    """FlowForge automations of workflows FlowForge no longer has (deleted while Prefect was down)."""
    return [a for a in automations
            if a.name.removeprefix(PREFIX).rsplit(":", 1)[0] not in workflows]


__all__ = [
    "EVENTS",
    "NAMESPACE_LABEL",
    "PREFIX",
    "Plan",
    "apply",
    "automation_name",
    "delete_workflow_automations",
    "desired_automations",
    "desired_schedules",
    "diff",
    "flowforge_automations",
    "orphans",
    "trigger_parameter",
]
