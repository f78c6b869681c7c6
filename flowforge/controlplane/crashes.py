"""Crashed runs detected by their missing heartbeats: one Prefect automation, kept in sync.

A worker host that dies (power, SIGKILL of the worker and its flow runs, a lost network)
leaves its runs Running in Prefect OSS until someone looks: only Prefect Cloud marks them.
Every flow run's engine emits `prefect.flow-run.heartbeat` every `heartbeat_seconds` (the
workers FlowForge starts set PREFECT_FLOWS_HEARTBEAT_FREQUENCY to it). This automation fires
for a FlowForge run (tag `flowforge`) that sent a heartbeat and then neither another nor a
terminal state within twice that interval, and sets it Crashed: Prefect's documented recipe,
created and kept by FlowForge instead of left to each operator. `flowforge up` does better on
its own machine (it sees the worker die and marks its runs at once); this covers the rest.
"""

from __future__ import annotations

from datetime import timedelta

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import (
    Automation,
    AutomationCore,
    EventTrigger,
    Posture,
)
from prefect.events.schemas.events import ResourceSpecification

from flowforge.controlplane.client import PrefectTarget, prefect_client
from flowforge.controlplane.triggers import automation_view

#: Not under the workflows' `flowforge:` prefix: no workflow owns it.
NAME = "flowforge-crashed-runs"
HEARTBEAT = "prefect.flow-run.heartbeat"
ENDINGS = ("Completed", "Failed", "Cancelled", "Crashed")


def desired(heartbeat_seconds: int) -> AutomationCore:
    return AutomationCore(
        name=NAME,
        description="FlowForge: a run whose heartbeats stopped (its worker or host died) is "
                    "marked Crashed.",
        trigger=EventTrigger(
            after={HEARTBEAT},
            expect={HEARTBEAT, *(f"prefect.flow-run.{s}" for s in ENDINGS)},
            match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
            match_related=ResourceSpecification({"prefect.resource.id": "prefect.tag.flowforge"}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=2 * heartbeat_seconds),
        ),
        actions=[ChangeFlowRunState(
            state=StateType.CRASHED,
            message=f"no heartbeat for {2 * heartbeat_seconds} s: the worker or host running "
                    "it stopped (FlowForge's crash detection)")],
    )


async def _mine(client: PrefectClient) -> list[Automation]:
    return list(await client.read_automations_by_name(NAME))


async def ensure(target: PrefectTarget, heartbeat_seconds: int) -> str:
    """Create or correct the automation; what was done ("created", "updated", "ok")."""
    wanted = desired(heartbeat_seconds)
    async with prefect_client(target) as client:
        found = await _mine(client)
        for extra in found[1:]:  # one is enough; a second would mark each run twice
            await client.delete_automation(extra.id)
        if not found:
            await client.create_automation(wanted)
            return "created"
        if automation_view(found[0]) != automation_view(wanted):
            await client.update_automation(found[0].id, wanted)
            return "updated"
    return "ok"


async def drift(target: PrefectTarget, heartbeat_seconds: int) -> list[str]:
    """What differs from the automation FlowForge keeps (`sync --check`); writes nothing."""
    async with prefect_client(target) as client:
        found = await _mine(client)
    if not found:
        return [f"automation {NAME} (crash detection) is missing in Prefect"]
    problems = []
    if len(found) > 1:
        problems.append(f"automation {NAME} is in Prefect {len(found)} times")
    if automation_view(found[0]) != automation_view(desired(heartbeat_seconds)):
        problems.append(f"automation {NAME} was changed in Prefect")
    return problems


__all__ = ["NAME", "desired", "drift", "ensure"]
