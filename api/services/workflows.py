"""Workflows: validate, store, sync; the one sequence every definition goes through.

Trigger rows are kept, not re-created, when a document is replaced: their ids are what Prefect
objects and webhook URLs are keyed by, and a webhook's encrypted secret lives on the row.
Cross-workflow rules (an upstream must exist, no dependency cycle, a called workflow must
exist, no two workflows compiling to one module, no deleting a workflow that others depend
on) need the database, so they are checked here rather than in the core.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import delete
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth import PermissionDeniedError, Principal
from api.middleware import note
from api.schemas.workflows import SyncStatus, WorkflowPublic, WorkflowSummary
from api.services import policies, sync
from api.services.server_refs import check_servers
from api.services.workflow_calls import check_calls
from api.tables import DependencyRow, JobRow, TriggerRow, WorkflowRow, utcnow
from flowforge.controlplane.client import PrefectTarget
from flowforge.core.errors import ConflictError, NotFoundError, SpecError
from flowforge.core.jobs import ScriptJob
from flowforge.core.names import module_collision, module_name
from flowforge.core.triggers import (
    DependencyTrigger,
    Trigger,
    assign_ids,
    config_key,
    duplicate_problems,
    find_cycle,
)
from flowforge.core.workflow import Workflow, effective_needs, spec_hash, spec_json

_TRIGGER: TypeAdapter[Any] = TypeAdapter(Trigger)


async def get_row(session: AsyncSession, name: str, who: Principal | None = None) -> WorkflowRow:
    """A stored workflow; "not found" too when it is in a namespace `who` does not act in."""
    row = (await session.exec(select(WorkflowRow).where(WorkflowRow.name == name))).first()
    if row is None or row.deleted or (who is not None and not who.sees(row.namespace)):
        raise NotFoundError(f"workflow '{name}' not found", details={"workflow": name})
    note(namespace=row.namespace, target=f"workflow:{name}")
    return row


async def list_rows(session: AsyncSession, who: Principal) -> list[WorkflowRow]:
    query = select(WorkflowRow).where(col(WorkflowRow.deleted).is_(False))
    if not who.every_namespace:
        query = query.where(col(WorkflowRow.namespace).in_(sorted(who.namespaces)))
    return list((await session.exec(query.order_by(col(WorkflowRow.name)))).all())


def act_in(who: Principal, namespace: str) -> None:
    """403 for a key that defines something in a namespace it does not act in."""
    if not who.sees(namespace):
        raise PermissionDeniedError(f"key '{who.name}' does not act in namespace '{namespace}'",
                                    details={"namespace": namespace})
    note(namespace=namespace)


def _children(row_id: int, wf: Workflow) -> list[Any]:
    rows: list[Any] = []
    for i, job in enumerate(wf.jobs):
        rows.append(JobRow(workflow_id=row_id, name=job.name, type=job.type,
                           runtime=job.runtime if isinstance(job, ScriptJob) else None,
                           position=i))
    for name, needs in effective_needs(wf).items():
        rows.extend(DependencyRow(workflow_id=row_id, job=name, upstream=n.job, on=n.on)
                    for n in needs)
    return rows


async def _delete_children(session: AsyncSession, row_id: int,
                           tables: tuple[Any, ...]) -> None:
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


async def check_triggers(session: AsyncSession, wf: Workflow, existing: WorkflowRow | None,
                         who: Principal | None = None) -> Workflow:
    """Give triggers stable ids and check the rules that span workflows; 422 on any problem.

    An upstream in a namespace `who` does not act in is as unknown as one that does not exist.
    """
    stored = [(r.id, r.type, r.name, config_key_of(r))
              for r in await trigger_rows(session, existing.id if existing else None)]
    wf = wf.model_copy(update={"triggers": assign_ids(list(wf.triggers), stored)})
    problems = duplicate_problems(list(wf.triggers))
    known = {name for name, namespace in (await session.exec(
        select(WorkflowRow.name, WorkflowRow.namespace).where(
            col(WorkflowRow.deleted).is_(False)))).all()
        if who is None or who.sees(namespace)}
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
    return config_key(_TRIGGER.validate_json(row.config))


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
                secrets: dict[str, str] | None = None,
                who: Principal | None = None) -> WorkflowRow:
    """Insert or replace a workflow and its rows in one transaction (committed here).

    `secrets` maps webhook trigger ids to sealed secrets to set (new or rotated).
    """
    wf = await check_triggers(session, wf, existing, who)
    digest = spec_hash(wf)
    if existing is None:
        row = WorkflowRow(name=wf.name, namespace=wf.ns, description=wf.description,
                          spec_hash=digest, spec=spec_json(wf))
        session.add(row)
        await session.flush()
    else:
        row = existing
        if row.deleted:  # re-created while the old one was still a tombstone
            row.deleted, row.version = False, 0
        if row.spec_hash != digest or row.version == 0:
            row.version += 1
        row.description, row.spec_hash, row.spec = wf.description, digest, spec_json(wf)
        row.namespace = wf.ns
        row.updated_at = utcnow()
        row.sync_status = "pending"
        await _delete_children(session, row.id, (JobRow, DependencyRow))  # type: ignore[arg-type]
    session.add_all(_children(row.id, wf))  # type: ignore[arg-type]
    await _store_triggers(session, row.id, wf, secrets or {})  # type: ignore[arg-type]
    await session.commit()
    await session.refresh(row)
    return row


def summary(row: WorkflowRow) -> WorkflowSummary:
    spec = json.loads(row.spec)
    return WorkflowSummary(
        name=row.name, namespace=row.namespace, description=row.description,
        version=row.version,
        spec_hash=row.spec_hash, jobs=len(spec.get("jobs", [])), updated_at=row.updated_at,
        sync=SyncStatus(status=row.sync_status,
                        error=row.sync_error, deployment_id=row.deployment_id),
    )


def public(row: WorkflowRow) -> WorkflowPublic:
    return WorkflowPublic(**summary(row).model_dump(), created_at=row.created_at,
                          spec=json.loads(row.spec))


async def check_document(session: AsyncSession, wf: Workflow, who: Principal | None) -> None:
    """The rules of a document that need the other stored workflows and servers; 422/409.

    Sub-workflow targets and call cycles, registered SSH servers, what the defining key may
    read of other namespaces (a called workflow, an upstream, a server), the namespace's own
    policy, and a module name no other workflow compiles to (`a-b` and `a_b` would both be
    `flows/a_b.py`, and a run of one would execute the other's code).
    """
    if who is not None:
        act_in(who, wf.ns)
    await check_calls(session, wf, who)
    await check_servers(session, wf, who)
    await policies.check(session, wf)
    other = module_collision(wf.name, list(await sync.live_names(session)))
    if other is not None:
        raise ConflictError(f"workflow '{wf.name}' would compile to the same module as workflow "
                            f"'{other}' (flows/{module_name(wf.name)}.py); choose another name",
                            details={"workflow": wf.name, "conflicts_with": other})


async def create(session: AsyncSession, target: PrefectTarget, wf: Workflow,
                 who: Principal | None = None) -> WorkflowRow:
    """Store a new workflow and sync it to Prefect; 409 if the name is taken."""
    await check_document(session, wf, who)
    note(target=f"workflow:{wf.name}")
    existing = (await session.exec(select(WorkflowRow).where(WorkflowRow.name == wf.name))).first()
    if existing is not None and not existing.deleted:
        raise ConflictError(f"workflow '{wf.name}' already exists; PUT /workflows/{wf.name} "
                            "replaces it", details={"workflow": wf.name})
    try:
        row = await store(session, wf, existing, who=who)
    except IntegrityError as exc:
        await session.rollback()
        raise ConflictError(f"workflow '{wf.name}' already exists",
                            details={"workflow": wf.name}) from exc
    return await sync.sync_row(session, row, target, probe=True)


async def replace(session: AsyncSession, target: PrefectTarget, row: WorkflowRow, wf: Workflow,
                  secrets: dict[str, str] | None = None,
                  who: Principal | None = None) -> WorkflowRow:
    """Replace a stored workflow's document (triggers keep their ids) and sync it; moving it
    to another namespace needs a key that acts in both."""
    if wf.name != row.name:
        raise SpecError([{"field": "name", "message": f"the document's name '{wf.name}' does "
                          f"not match the URL's '{row.name}'; renaming is not supported"}])
    await check_document(session, wf, who)
    row = await store(session, wf, row, secrets, who=who)
    return await sync.sync_row(session, row, target, probe=True)


async def delete_workflow(session: AsyncSession, target: PrefectTarget, name: str,
                          who: Principal | None = None) -> WorkflowRow | None:
    """Delete a workflow (409 while others depend on it); the row if Prefect did not let go
    of it in time (the sync loop finishes the job), else None."""
    row = await get_row(session, name, who)
    await refuse_if_depended_on(session, name)
    row.deleted, row.sync_status = True, "pending"
    session.add(row)
    await session.commit()
    # Purges the row once Prefect forgot it; a tombstone until then.
    await sync.sync_row(session, row, target, probe=True)
    return (await session.exec(select(WorkflowRow).where(WorkflowRow.name == name))).first()


spec_of = sync.spec_of

__all__ = ["act_in", "check_document", "check_triggers", "create", "delete_workflow",
           "dependants", "get_row", "list_rows", "public", "replace", "spec_of", "store",
           "summary", "trigger_rows"]
