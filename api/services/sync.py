"""Bringing Prefect in line with the stored workflows: one row, all rows, or a drift report.

The database is the source of truth for definitions; Prefect's objects are derived from it by
an idempotent sync that runs on every change, at start-up, on demand and in a loop for the
rows still out of sync, so it converges after Prefect was unreachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import AsyncIterator
from typing import Any

from sqlalchemy import delete, text
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth import ALL_NAMESPACES
from api.tables import DependencyRow, JobRow, TriggerRow, WorkflowRow
from flowforge.controlplane import crashes, deploy
from flowforge.controlplane.client import PrefectTarget, reachable
from flowforge.core.errors import PrefectUnavailableError
from flowforge.core.workflow import Workflow

log = logging.getLogger("flowforge.sync")
_sync_locks: dict[str, asyncio.Lock] = {}


def lock_key(name: str) -> int:
    """A stable signed 64-bit key per workflow name for PostgreSQL's advisory locks."""
    digest = hashlib.sha256(f"flowforge-sync:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextlib.asynccontextmanager
async def replica_lock(session: AsyncSession, name: str) -> AsyncIterator[None]:
    """Hold workflow `name`'s sync lock across every API process on this database.

    PostgreSQL: a session-level advisory lock on a connection of its own (the request's
    session commits inside), so a replica that dies mid-sync releases it with its connection
    and the next sync, which is idempotent, repairs whatever it left half done. SQLite serves
    one API process, whose in-process lock is enough.
    """
    engine = session.bind
    if not isinstance(engine, AsyncEngine) or engine.dialect.name != "postgresql":
        yield
        return
    key = lock_key(name)
    async with engine.connect() as connection:
        await connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        await connection.commit()
        try:
            yield
        finally:
            await connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            await connection.commit()


def spec_of(row: WorkflowRow) -> Workflow:
    return Workflow.model_validate_json(row.spec)


async def _delete_children(session: AsyncSession, row_id: int) -> None:
    tables: tuple[Any, ...] = (JobRow, DependencyRow, TriggerRow)
    for table in tables:
        await session.exec(delete(table).where(col(table.workflow_id) == row_id))


async def sync_row(session: AsyncSession, row: WorkflowRow, target: PrefectTarget,
                   *, unless_synced: bool = False, probe: bool = False) -> WorkflowRow:
    """Bring Prefect in line with one row; record the outcome on the row, never raise.

    A failure leaves the definition stored and marked: `pending` when Prefect was unreachable
    (the sync loop retries), `error` when Prefect refused it.

    `unless_synced` is for callers that picked the row *because* it was not synced (the
    background loop, a run start): once the lock is theirs they re-read it and leave it alone
    if a request synced it meanwhile. Without that the loop, having read a row while its
    POST was still deploying, deployed it a second time seconds later and undid whatever was
    changed in Prefect in between (a deleted schedule came back, a paused automation resumed:
    the intermittent `sync --check` failure in CI).

    `probe` is for a definition write: if Prefect does not answer its health check in time,
    the row is left `pending` at once instead of waiting out every retry.
    """
    # One sync per workflow at a time in this process: a DELETE and the background loop
    # otherwise race to remove the same deployment and the same row (seen in CI); and in every
    # API process on the same PostgreSQL database (`replica_lock`).
    async with _sync_locks.setdefault(row.name, asyncio.Lock()), \
            replica_lock(session, row.name):
        try:
            # What is stored now: another replica may have replaced the definition while
            # this one waited for the lock, and the newest must be what ends up deployed.
            await session.refresh(row)
        except InvalidRequestError:  # purged meanwhile by a DELETE's sync
            return row
        if unless_synced and row.sync_status == "synced" and row.deployment_id:
            return row
        problem = await reachable(target) if probe else None
        try:
            if problem is not None:
                raise PrefectUnavailableError(
                    f"Prefect API at {target.api_url} {problem}; stored, and deployed by the "
                    "sync loop once Prefect is back")
            if row.deleted:
                await deploy.undeploy(row.name, target)
                await _delete_children(session, row.id)  # type: ignore[arg-type]
                # A statement, not session.delete(): a row already purged by another
                # process's sync is not an error.
                await session.exec(delete(WorkflowRow).where(
                    col(WorkflowRow.id) == row.id))
                await session.commit()
                return row
            deployment = await deploy.deploy(spec_of(row), target)
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


def _every_namespace(namespaces: frozenset[str] | None) -> bool:
    return namespaces is None or ALL_NAMESPACES in namespaces


def _in_namespaces(query: Any, namespaces: frozenset[str] | None) -> Any:
    if _every_namespace(namespaces):
        return query
    return query.where(col(WorkflowRow.namespace).in_(sorted(namespaces or ())))


async def sync_all(session: AsyncSession, target: PrefectTarget, only_unsynced: bool = False,
                   namespaces: frozenset[str] | None = None) -> list[WorkflowRow]:
    """Sync every workflow (of `namespaces`, when given; orphaned automations are then left
    for a sync of every namespace, since they belong to no namespace any more)."""
    query = _in_namespaces(select(WorkflowRow).order_by(col(WorkflowRow.name)), namespaces)
    if only_unsynced:
        query = query.where(WorkflowRow.sync_status != "synced")
    rows = list((await session.exec(query)).all())
    done = [await sync_row(session, row, target, unless_synced=only_unsynced) for row in rows]
    if not only_unsynced and _every_namespace(namespaces):
        try:  # automations of workflows deleted while Prefect was unreachable
            await deploy.orphan_automations(await live_names(session), target, delete=True)
            await crashes.ensure(target, target.heartbeat_seconds)
        except PrefectUnavailableError as exc:
            log.warning("orphan and crash-detection automations not checked: %s", exc.message)
    return done


async def live_names(session: AsyncSession) -> set[str]:
    return set((await session.exec(select(WorkflowRow.name).where(
        col(WorkflowRow.deleted).is_(False)))).all())


async def drift_all(session: AsyncSession, target: PrefectTarget,
                    namespaces: frozenset[str] | None = None) -> dict[str, list[str]]:
    """Workflow -> what differs in Prefect (`flowforge sync --check`); writes nothing."""
    rows = (await session.exec(_in_namespaces(
        select(WorkflowRow).order_by(col(WorkflowRow.name)), namespaces))).all()
    out: dict[str, list[str]] = {}
    for row in rows:
        if row.deleted:
            out[row.name] = ["deleted in FlowForge, not yet in Prefect"]
        else:
            out[row.name] = await deploy.drift(spec_of(row), target)
    if _every_namespace(namespaces):
        for name in await deploy.orphan_automations(await live_names(session), target,
                                                    delete=False):
            out.setdefault(name.split(":")[1], []).append(
                f"automation {name} belongs to no FlowForge workflow")
        if problems := await crashes.drift(target, target.heartbeat_seconds):
            out[crashes.NAME] = problems
    return out


__all__ = ["drift_all", "live_names", "lock_key", "replica_lock", "spec_of", "sync_all",
           "sync_row"]
