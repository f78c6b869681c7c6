"""The webhook inbox: a verified delivery is stored first, then turned into a flow run.

Prefect on SQLite creates flow runs one write at a time (about 10 a second on this machine
under load, and "database is locked" errors when pushed), and it may be restarting. A sender
bursting 50 deliveries a second, or a Prefect outage, must not lose any. So `POST /hooks/{id}`
stores the delivery (unique per trigger and delivery id, so a replay finds the same row),
then waits up to `webhook_answer_seconds` for its run; the answer carries the run id when it
exists by then, else `status: queued`. A background loop creates the runs of queued
deliveries, a few at a time, retrying with backoff. Prefect's idempotency key
`webhook:{trigger}:{delivery}` makes a create that raced another return the same run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from datetime import timedelta
from typing import Any

from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.services import audit
from api.settings import ApiSettings
from api.tables import DeliveryRow, WorkflowRow, utcnow
from flowforge.controlplane import runs
from flowforge.controlplane.client import PrefectTarget, prefect_client
from flowforge.core.errors import PrefectUnavailableError

log = logging.getLogger("flowforge.hooks")
MAX_BACKOFF_SECONDS = 300
GIVE_UP_AFTER = timedelta(days=1)


def idempotency_key(row: DeliveryRow) -> str:
    return f"webhook:{row.trigger_id}:{row.delivery_id}"


async def _find(session: AsyncSession, trigger_id: str, delivery_id: str) -> DeliveryRow | None:
    return (await session.exec(select(DeliveryRow).where(
        DeliveryRow.trigger_id == trigger_id, DeliveryRow.delivery_id == delivery_id))).first()


async def record(session: AsyncSession, trigger_id: str, delivery_id: str, workflow: str,
                 parameters: dict[str, Any]) -> DeliveryRow:
    """Store the delivery, or return the one already stored under the same delivery id."""
    existing = await _find(session, trigger_id, delivery_id)
    if existing is not None:
        await session.commit()
        return existing
    row = DeliveryRow(trigger_id=trigger_id, delivery_id=delivery_id, workflow=workflow,
                      parameters=json.dumps(parameters))
    session.add(row)
    try:
        await session.commit()
    except IntegrityError:  # the same delivery id arrived twice at once
        await session.rollback()
        existing = await _find(session, trigger_id, delivery_id)
        await session.commit()
        if existing is None:
            raise
        return existing
    return row


class Dispatcher:
    """Creates the flow runs of stored deliveries, at most `webhook_prefect_concurrency` at once."""

    def __init__(self, maker: async_sessionmaker[AsyncSession], target: PrefectTarget,
                 settings: ApiSettings) -> None:
        self.maker, self.target, self.settings = maker, target, settings
        self.slots = asyncio.Semaphore(settings.webhook_prefect_concurrency)
        self.inflight: dict[int, asyncio.Task[str | None]] = {}

    def start(self, row_id: int) -> asyncio.Task[str | None]:
        task = self.inflight.get(row_id)
        if task is None:
            task = asyncio.create_task(self._create(row_id))
            self.inflight[row_id] = task
            task.add_done_callback(lambda _: self.inflight.pop(row_id, None))
        return task

    async def wait(self, row: DeliveryRow, seconds: float) -> str | None:
        """The delivery's run id, if it exists within `seconds` (the create goes on after).

        With creates already queued (a burst), it answers at once: waiting would only make
        the sender's requests pile up behind Prefect.
        """
        if row.run_id is not None or row.id is None:
            return row.run_id
        backlog = len(self.inflight) >= self.settings.webhook_prefect_concurrency
        task = self.start(row.id)
        if backlog and not task.done():
            return None
        done, _ = await asyncio.wait({task}, timeout=seconds)
        return task.result() if done else None

    async def _create(self, row_id: int) -> str | None:
        try:
            async with self.slots:
                return await self._create_now(row_id)
        except Exception:  # never let one delivery stop the others; it is retried later
            log.exception("webhook delivery %s: could not create its run", row_id)
            return None

    async def _create_now(self, row_id: int) -> str | None:
        async with self.maker() as session:
            row = await session.get(DeliveryRow, row_id)
            if row is None or row.run_id is not None:
                return None if row is None else row.run_id
            workflow = (await session.exec(select(WorkflowRow).where(
                WorkflowRow.name == row.workflow, col(WorkflowRow.deleted).is_(False)))).first()
            deployment = workflow.deployment_id if workflow else None
            namespace = workflow.namespace if workflow else None
            parameters, key = json.loads(row.parameters), idempotency_key(row)
            await session.commit()  # no connection held while Prefect works
        run_id: str | None = None
        error: str | None = None
        if deployment is None:
            error = f"workflow '{row.workflow}' is deleted or not deployed"
        else:
            try:
                async with prefect_client(self.target) as client:
                    run_id = await runs.create_run(client, deployment, parameters, key,
                                                   tags=["webhook"])
            except (PrefectUnavailableError, PrefectHTTPStatusError, ObjectNotFound) as exc:
                error = getattr(exc, "message", None) or str(exc)
        async with self.maker() as session:
            row = await session.get(DeliveryRow, row_id)
            if row is None:
                return run_id
            row.attempts += 1
            first = row.run_id is None and run_id is not None
            row.run_id = row.run_id or run_id
            row.last_error = error
            now = utcnow()
            received = row.received_at if row.received_at.tzinfo else row.received_at.replace(
                tzinfo=now.tzinfo)
            if row.run_id is not None or now - received > GIVE_UP_AFTER:
                row.next_attempt_at = None
            else:
                row.next_attempt_at = now + timedelta(
                    seconds=min(2 ** row.attempts, MAX_BACKOFF_SECONDS))
                log.warning("webhook delivery %s not started yet (attempt %d): %s",
                            key, row.attempts, error)
            session.add(row)
            await session.commit()
            started = row.run_id
        if first and started is not None:
            # The run's own row, whether it started while the sender waited or queued later.
            await audit.record(self.maker, actor=f"trigger:{row.trigger_id}", actor_name=None,
                               action="run.start.webhook", target=f"run:{started}",
                               namespace=namespace, outcome=201,
                               event_key=f"run-start:{started}")
        return started

    async def pending(self) -> list[int]:
        async with self.maker() as session:
            ids = (await session.exec(select(DeliveryRow.id).where(
                col(DeliveryRow.run_id).is_(None), col(DeliveryRow.next_attempt_at).is_not(None),
                col(DeliveryRow.next_attempt_at) <= utcnow()).order_by(
                col(DeliveryRow.id)).limit(500))).all()
        return [i for i in ids if i is not None]

    async def loop(self, interval: float) -> None:
        """Create the runs of queued deliveries (received during a burst or an outage)."""
        while True:
            try:
                for row_id in await self.pending():
                    self.start(row_id)
            except Exception:
                log.exception("webhook dispatcher pass failed")
            await asyncio.sleep(interval)

    async def close(self) -> None:
        for task in list(self.inflight.values()):
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


__all__ = ["Dispatcher", "idempotency_key", "record"]
