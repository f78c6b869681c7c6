"""Workflow rows: what creating, replacing, reading and syncing a workflow share.

Trigger rows are kept, not re-created, when a document is replaced: their ids are what Prefect
objects and webhook URLs are keyed by, and a webhook's encrypted secret lives on the row.
Cross-workflow rules (an upstream must exist, no dependency cycle, no deleting a workflow that
others depend on) need the database, so they are checked here rather than in flowforge.spec.
"""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

from sqlalchemy import delete
from sqlalchemy.exc import InvalidRequestError
from sqlalchemy.orm.exc import StaleDataError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.schemas import SyncStatus, WorkflowPublic, WorkflowSummary
from api.tables import DependencyRow, JobRow, TriggerRow, WorkflowRow, utcnow
from flowforge import prefect_sync
from flowforge.errors import ConflictError, NotFoundError, PrefectUnavailableError, SpecError
from flowforge.prefect_sync import DeployTarget
from flowforge.spec import Workflow, effective_needs, spec_hash, spec_json
from flowforge.triggers import DependencyTrigger, assign_ids, config_key, duplicate_problems, find_cycle

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
    return rows


async def _delete_children(session: AsyncSession, row_id: int,
                           tables: tuple[Any, ...] = (JobRow, DependencyRow, TriggerRow)) -> None:
    for table in tables:
        await session.exec(delete(table).where(col(table.workflow_id) == row_id))


async def trigger_rows(session: AsyncSession, row_id: int | None) -> list[TriggerRow]:
    if row_id is None:
        return []
    return list((await session.exec(select(TriggerRow).where(
        TriggerRow.workflow_id == row_id))).all())


async def _dependency_edges(session: AsyncSession, exclude: str) -> dict[str, set[str]]:
    """workflow -> upstream workflows it runs after, over every stored workflow but `exclude`."""
    rows = (await session.exec(
        select(WorkflowRow.name, TriggerRow.config).join(
            TriggerRow, col(TriggerRow.workflow_id) == col(WorkflowRow.id))
        .where(TriggerRow.type == "dependency", col(WorkflowRow.deleted).is_(False),
               WorkflowRow.name != exclude))).all()
    edges: dict[str, set[str]] = {}
    for name, config in rows:
        edges.setdefault(name, set()).update(json.loads(config).get("upstream", []))
    return edges


async def dependants(session: AsyncSession, name: str) -> list[str]:
    """Workflows with a dependency trigger on `name` (which therefore cannot go away)."""
    edges = await _dependency_edges(session, exclude=name)
    return sorted(w for w, ups in edges.items() if name in ups)


async def refuse_if_depended_on(session: AsyncSession, name: str) -> None:
    users = await dependants(session, name)
    if users:
        raise ConflictError(f"workflow '{name}' cannot be deleted: {', '.join(users)} "
                            f"depend{'s' if len(users) == 1 else ''} on it through dependency "
                            "triggers; remove those triggers first",
                            details={"workflow": name, "dependants": users})


async def check_triggers(session: AsyncSession, wf: Workflow,
                         existing: WorkflowRow | None) -> Workflow:
    """Give triggers stable ids and check the rules that span workflows; 422 on any problem."""
    stored = [(r.id, r.type, r.name, config_key_of(r))
              for r in await trigger_rows(session, existing.id if existing else None)]
    wf = wf.model_copy(update={"triggers": assign_ids(list(wf.triggers), stored)})
    problems = duplicate_problems(list(wf.triggers))
    known = set((await session.exec(select(WorkflowRow.name).where(
        col(WorkflowRow.deleted).is_(False)))).all())
    edges = await _dependency_edges(session, exclude=wf.name)
    mine: set[str] = set()
    for i, trigger in enumerate(wf.triggers):
        if not isinstance(trigger, DependencyTrigger):
            continue
        mine.update(trigger.upstream)
        for j, upstream in enumerate(trigger.upstream):
            if upstream not in known and upstream != wf.name:
                problems.append({"field": f"triggers[{i}].upstream[{j}]", "trigger": trigger.name,
                                 "message": f"trigger '{trigger.name}': unknown upstream "
                                            f"workflow '{upstream}'"})
    edges[wf.name] = mine
    cycle = find_cycle(edges, wf.name)
    if cycle:
        problems.append({"field": "triggers", "cycle": cycle,
                         "message": "dependency cycle across workflows: " + " -> ".join(cycle)})
    if problems:
        raise SpecError(problems)
    return wf


def config_key_of(row: TriggerRow) -> str:
    from pydantic import TypeAdapter

    from flowforge.triggers import Trigger

    trigger: Any = TypeAdapter(Trigger).validate_json(row.config)
    return config_key(trigger)


async def _store_triggers(session: AsyncSession, row_id: int, wf: Workflow,
                          secrets: dict[str, str]) -> None:
    old = {r.id: r for r in await trigger_rows(session, row_id)}
    for trigger in wf.triggers:
        tid = trigger.id or ""
        tr = old.pop(tid, None) or TriggerRow(id=tid, workflow_id=row_id, type=trigger.type,
                                               config="{}")
        tr.type, tr.name, tr.enabled = trigger.type, trigger.name, trigger.enabled
        tr.config = trigger.model_dump_json(exclude_none=True)
        if trigger.type != "webhook":
            tr.secret = None
        elif tid in secrets:
            tr.secret = secrets[tid]
        session.add(tr)
    for gone in old.values():
        await session.delete(gone)


async def store(session: AsyncSession, wf: Workflow, existing: WorkflowRow | None,
                secrets: dict[str, str] | None = None) -> WorkflowRow:
    """Insert or replace a workflow and its rows in one transaction (committed here).

    `secrets` maps webhook trigger ids to sealed secrets to set (new or rotated).
    """
    wf = await check_triggers(session, wf, existing)
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
        await _delete_children(session, row.id, (JobRow, DependencyRow))  # type: ignore[arg-type]
    session.add_all(_children(row.id, wf))  # type: ignore[arg-type]
    await _store_triggers(session, row.id, wf, secrets or {})  # type: ignore[arg-type]
    await session.commit()
    await session.refresh(row)
    return row


async def sync_row(session: AsyncSession, row: WorkflowRow, target: DeployTarget,
                   *, unless_synced: bool = False) -> WorkflowRow:
    """Bring Prefect in line with one row; record the outcome on the row, never raise.

    A failure leaves the definition stored and marked: `pending` when Prefect was unreachable
    (the sync loop retries), `error` when Prefect refused it.

    `unless_synced` is for callers that picked the row *because* it was not synced (the
    background loop, a run start): once the lock is theirs they re-read it and leave it alone
    if a request synced it meanwhile. Without that the loop, having read a row while its
    POST was still deploying, deployed it a second time seconds later and undid whatever was
    changed in Prefect in between (a deleted schedule came back, a paused automation resumed:
    the intermittent `sync --check` failure in CI).
    """
    # One sync per workflow at a time in this process: a DELETE and the background loop
    # otherwise race to remove the same deployment and the same row (seen in CI).
    async with _sync_locks.setdefault(row.name, asyncio.Lock()):
        if unless_synced:
            try:
                await session.refresh(row)
            except InvalidRequestError:  # purged meanwhile by a DELETE's sync
                return row
            if row.sync_status == "synced" and row.deployment_id:
                return row
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
    done = [await sync_row(session, row, target, unless_synced=only_unsynced) for row in rows]
    if not only_unsynced:
        try:  # automations of workflows deleted while Prefect was unreachable
            await prefect_sync.orphan_automations(await live_names(session), target, delete=True)
        except PrefectUnavailableError as exc:
            log.warning("orphan automations not checked: %s", exc.message)
    return done


async def live_names(session: AsyncSession) -> set[str]:
    return set((await session.exec(select(WorkflowRow.name).where(
        col(WorkflowRow.deleted).is_(False)))).all())


async def drift_all(session: AsyncSession, target: DeployTarget) -> dict[str, list[str]]:
    """Workflow -> what differs in Prefect (`flowforge sync --check`); writes nothing."""
    rows = (await session.exec(select(WorkflowRow).order_by(col(WorkflowRow.name)))).all()
    out: dict[str, list[str]] = {}
    for row in rows:
        if row.deleted:
            out[row.name] = ["deleted in FlowForge, not yet in Prefect"]
        else:
            out[row.name] = await prefect_sync.drift(spec_of(row), target)
    for name in await prefect_sync.orphan_automations(await live_names(session), target,
                                                      delete=False):
        out.setdefault(name.split(":")[1], []).append(
            f"automation {name} belongs to no FlowForge workflow")
    return out


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
