"""Audit rows for runs that triggers start without the API: schedules, dependencies, events.

Prefect's scheduler and automations create those runs; the API sees them only by asking. A
loop reads the FlowForge runs that came due since it last looked (by expected start: a run
cancelled before it started is recorded too, one the scheduler made ahead only once it is due)
and records each one once (`event_key` `run-start:<id>`, so several API processes, or a
restart, never record one twice).
Runs started through the API (manual, repair, rerun, webhook) have their request's row already.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.services import audit
from api.tables import WorkflowRow
from flowforge.controlplane import runs
from flowforge.controlplane.client import PrefectTarget, prefect_client

log = logging.getLogger("flowforge.audit")
TRIGGER_TYPES = frozenset({"schedule", "dependency", "event"})
#: How far back the first pass looks, for runs started while the API was down.
LOOK_BACK = timedelta(hours=1)
#: How far behind now each pass looks again: a run is stored a moment after its expected
#: start was set (seconds on a loaded SQLite Prefect), so one due just before the last run
#: seen may appear later; the event key makes the second look write nothing twice.
OVERLAP = timedelta(seconds=30)
PAGE = 200


async def record_since(maker: async_sessionmaker[AsyncSession], target: PrefectTarget,
                       since: datetime) -> datetime:
    """Record the trigger-started runs that came due after `since`; the next `since`."""
    now = datetime.now(UTC)
    async with prefect_client(target) as client:
        started = await runs.due_since(client, since, now, PAGE)
    if not started:
        return since
    async with maker() as session:
        namespaces = dict((await session.exec(select(WorkflowRow.deployment_id,
                                                     WorkflowRow.namespace))).all())
    for run in started:
        trigger = (run.parameters or {}).get("flowforge_trigger") or {}
        if trigger.get("type") in TRIGGER_TYPES:
            await audit.record(maker, **audit.run_audit_fields(
                run, namespaces.get(str(run.deployment_id))))
    # Every run has an expected start (Prefect sets it with the first state), so the cursor
    # moves on even when none of these has started yet; a full page moves it to its end.
    last = max((r.expected_start_time for r in started if r.expected_start_time is not None),
               default=since)
    return last if len(started) >= PAGE else max(since, min(last, now - OVERLAP))


async def audit_trigger_runs(maker: async_sessionmaker[AsyncSession], target: PrefectTarget,
                             interval: float) -> None:
    since = datetime.now(UTC) - LOOK_BACK
    while True:
        try:
            since = await record_since(maker, target, since)
        except Exception as exc:  # Prefect away: the next pass looks from the same point
            log.debug("trigger runs not audited this pass: %s", exc)
        await asyncio.sleep(interval)


__all__ = ["audit_trigger_runs", "record_since"]
