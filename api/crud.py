"""Workflow rows: what creating, replacing, reading and syncing a workflow share."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.schemas import SyncStatus, WorkflowPublic, WorkflowSummary
from api.tables import DependencyRow, JobRow, TriggerRow, WorkflowRow, utcnow
from flowforge import prefect_sync
from flowforge.errors import NotFoundError, PrefectUnavailableError
from flowforge.prefect_sync import DeployTarget
from flowforge.spec import Workflow, effective_needs, spec_hash, spec_json

log = logging.getLogger("flowforge.sync")
_sync_locks: dict[str, asyncio.Lock] = {}


async def get_row(session: AsyncSession, name: str) -> WorkflowRow:
    row = (await session.exec(select(WorkflowRow).where(WorkflowRow.name == name))).first()
    if row is None or row.deleted:
        raise NotFoundError(f"workflow '{name}' not found", details={"workflow": name})
    return row


def spec_of(row: WorkflowRow) -> Workflow:
    return Workflow.model_validate_json(row.spec)


def _children(row_id: int, wf: Workflow) -> list[Any]:
    rows: list[Any] = []
    for i, job in enumerate(wf.jobs):
        rows.append(JobRow(workflow_id=row_id, name=job.name, type=job.type,
                           runtime=job.runtime, position=i))
    for name, needs in effective_needs(wf).items():
        rows.extend(DependencyRow(workflow_id=row_id, job=name, upstream=n.job, on=n.on)
                    for n in needs)
    for trigger in wf.triggers:
        rows.append(TriggerRow(workflow_id=row_id, type=trigger.type, name=trigger.name,
                               enabled=trigger.enabled,
                               config=trigger.model_dump_json(exclude_none=True)))
    return rows


async def _delete_children(session: AsyncSession, row_id: int) -> None:
    for table in (JobRow, DependencyRow, TriggerRow):
        await session.exec(delete(table).where(col(table.workflow_id) == row_id))


async def store(session: AsyncSession, wf: Workflow, existing: WorkflowRow | None) -> WorkflowRow:
    """Insert or replace a workflow and its rows in one transaction (committed here)."""
    digest = spec_hash(wf)
    if existing is None:
        row = WorkflowRow(name=wf.name, description=wf.description, spec_hash=digest,
                          spec=spec_json(wf))
        session.add(row)
        await session.flush()
    else:
        row = existing
        if row.deleted:  # re-created while the old one was still a tombstone
            row.deleted, row.version = False, 0
        if row.spec_hash != digest or row.version == 0:
            row.version += 1
        row.description, row.spec_hash, row.spec = wf.description, digest, spec_json(wf)
        row.updated_at = utcnow()
        row.sync_status = "pending"
        await _delete_children(session, row.id)  # type: ignore[arg-type]
    session.add_all(_children(row.id, wf))  # type: ignore[arg-type]
    await session.commit()
    await session.refresh(row)
    return row


async def sync_row(session: AsyncSession, row: WorkflowRow, target: DeployTarget) -> WorkflowRow:
    """Bring Prefect in line with one row; record the outcome on the row, never raise.

    A failure leaves the definition stored and marked: `pending` when Prefect was unreachable
    (the sync loop retries), `error` when Prefect refused it.
    """
    # One sync per workflow at a time in this process: a DELETE and the background loop
    # otherwise race to remove the same deployment and the same row (seen in CI).
    async with _sync_locks.setdefault(row.name, asyncio.Lock()):
        try:
            if row.deleted:
                await prefect_sync.undeploy(row.name, target)
                await _delete_children(session, row.id)  # type: ignore[arg-type]
                # A statement, not session.delete(): a row already purged by another
                # process's sync is not an error.
                await session.exec(delete(WorkflowRow).where(
                    col(WorkflowRow.id) == row.id))
                await session.commit()
                return row
            deployment = await prefect_sync.deploy(spec_of(row), target)
            row.sync_status, row.sync_error, row.deployment_id = "synced", None, str(deployment)
        except PrefectUnavailableError as exc:
            row.sync_status, row.sync_error = "pending", exc.message
        except Exception as exc:
            log.exception("sync of workflow %s failed", row.name)
            row.sync_status, row.sync_error = "error", f"{type(exc).__name__}: {exc}"
        session.add(row)
        try:
            await session.commit()
        except StaleDataError:  # deleted meanwhile (tombstone purged): nothing left to mark
            await session.rollback()
            return row
        await session.refresh(row)
        return row


async def sync_all(session: AsyncSession, target: DeployTarget,
                   only_unsynced: bool = False) -> list[WorkflowRow]:
    query = select(WorkflowRow).order_by(col(WorkflowRow.name))
    if only_unsynced:
        query = query.where(WorkflowRow.sync_status != "synced")
    rows = list((await session.exec(query)).all())
    return [await sync_row(session, row, target) for row in rows]


def summary(row: WorkflowRow) -> WorkflowSummary:
    spec = json.loads(row.spec)
    return WorkflowSummary(
        name=row.name, description=row.description, version=row.version,
        spec_hash=row.spec_hash, jobs=len(spec.get("jobs", [])), updated_at=row.updated_at,
        sync=SyncStatus(status=row.sync_status,
                        error=row.sync_error, deployment_id=row.deployment_id),
    )


def public(row: WorkflowRow) -> WorkflowPublic:
    return WorkflowPublic(**summary(row).model_dump(), created_at=row.created_at,
                          spec=json.loads(row.spec))
