"""`settings.on_crash: repair`: a run that crashed (its worker or machine died) is repaired by
the API itself, as `POST /runs/{id}/repair` would: completed jobs' outputs reused, the rest
run again, on whichever worker takes it.

A loop reads the FlowForge runs that ended Crashed lately. Each repair is created with the
idempotency key `repair:<id>:on-crash`, so several API processes, or passes over the same run,
start one repair; a chain of repairs stops after `max_repairs` (default 1), counted in the
repair's trigger. A run that crashed before publishing its job summary is run again instead.
Errors of one run (a workflow deleted since) are logged and leave the others to go on.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta

from prefect.client.schemas.objects import FlowRun
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.services import runs as run_service
from api.services import sync
from api.tables import WorkflowRow
from flowforge.controlplane import runs
from flowforge.controlplane.client import PrefectTarget, prefect_client
from flowforge.core.errors import FlowForgeError

log = logging.getLogger("flowforge.crash_repair")
#: How far back each pass looks: a crash older than this (the API was down longer) is left
#: to a person.
LOOK_BACK = timedelta(hours=1)
PAGE = 200
KEY = "on-crash"


def repairs_so_far(flow_run: FlowRun) -> int:
    trigger = (flow_run.parameters or {}).get("flowforge_trigger") or {}
    return int(trigger.get("crash_repairs") or 0)


async def repair_crashed(maker: async_sessionmaker[AsyncSession], target: PrefectTarget,
                         ui_base: str, handled: set[str] | None = None) -> list[str]:
    """Start the repairs due; the ids of the runs they were started for. `handled`: runs this
    process has already dealt with (repaired or refused), skipped on later passes."""
    handled = set() if handled is None else handled
    async with prefect_client(target) as client:
        crashed = [r for r in await runs.crashed_since(client, datetime.now(UTC) - LOOK_BACK,
                                                       PAGE) if str(r.id) not in handled]
    if not crashed:
        return []
    async with maker() as session:
        rows = {row.deployment_id: row for row in (await session.exec(
            select(WorkflowRow).where(WorkflowRow.deleted == False))).all()}  # noqa: E712
    due = []
    for flow_run in crashed:
        row = rows.get(str(flow_run.deployment_id))
        if row is None:
            continue
        settings = sync.spec_of(row).settings
        done = repairs_so_far(flow_run)
        handled.add(str(flow_run.id))
        if settings.on_crash == "repair" and done < (settings.max_repairs or 1):
            due.append((flow_run, done, settings.max_repairs or 1))
    if not due:
        return []
    # Only the runs to repair: whether each published a summary decides repair or rerun.
    async with prefect_client(target) as client:
        published = {r.id for r, _, _ in due
                     if await runs.read_run_summary(client, r.id) is not None}
    repaired = []
    for flow_run, done, most in due:
        run_id = str(flow_run.id)
        extra = {"crash_repairs": done + 1, "on_crash": True}
        try:
            async with maker() as session:
                if flow_run.id in published:
                    await run_service.repair_run(session, target, run_id, ui_base, [], KEY,
                                                 trigger_extra=extra)
                else:  # it crashed before its first summary: nothing to reuse
                    await run_service.rerun_run(session, target, run_id, ui_base, {}, KEY,
                                                trigger_extra=extra)
        except FlowForgeError as exc:
            log.warning("crashed run %s not repaired: %s", run_id, exc.message)
            continue
        log.info("crashed run %s: repair %d of %d started", run_id, done + 1, most)
        repaired.append(run_id)
    return repaired


async def repair_loop(maker: async_sessionmaker[AsyncSession], target: PrefectTarget,
                      ui_base: str, interval: float) -> None:
    handled: set[str] = set()
    while True:
        try:
            await repair_crashed(maker, target, ui_base, handled)
        except Exception as exc:  # Prefect away: the next pass looks again
            log.debug("crashed runs not looked at this pass: %s", exc)
        await asyncio.sleep(interval)


__all__ = ["repair_crashed", "repair_loop", "repairs_so_far"]
