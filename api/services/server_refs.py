"""Which workflows use which SSH servers: the checks that need the database.

A workflow may only name servers that exist (422 naming the job and field), and a server named
by a stored workflow cannot be deleted (409 naming the workflows). Tags are selectors resolved
when a job starts, so they neither need a matching server nor keep one from being deleted.
"""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth import Principal
from api.tables import ServerRow, WorkflowRow
from flowforge.core.errors import ConflictError, SpecError
from flowforge.core.targets import SshTarget
from flowforge.core.workflow import Workflow


def named_servers(wf: Workflow) -> dict[str, list[tuple[int, int]]]:
    """server -> [(job index, index in `servers`)] for every ssh target of `wf`."""
    found: dict[str, list[tuple[int, int]]] = {}
    for i, job in enumerate(wf.jobs):
        target = job.target_options
        if isinstance(target, SshTarget):
            for k, name in enumerate(target.servers):
                found.setdefault(name, []).append((i, k))
    return found


async def check_servers(session: AsyncSession, wf: Workflow, who: Principal | None = None) -> None:
    """422 for every job naming a server that is not registered, or is in a namespace the
    defining key does not act in; cheap when there is none."""
    named = named_servers(wf)
    if not named:
        return
    known = {name for name, namespace in (await session.exec(
        select(ServerRow.name, ServerRow.namespace).where(
            col(ServerRow.name).in_(list(named))))).all()
        if who is None or who.sees(namespace)}
    problems = [
        {"field": f"jobs[{i}].target.ssh.servers[{k}]", "job": wf.jobs[i].name,
         "message": f"job '{wf.jobs[i].name}': unknown server '{name}' (POST /servers "
                    "registers it)"}
        for name, places in named.items() if name not in known for i, k in places]
    if problems:
        raise SpecError(problems)


async def refuse_if_used(session: AsyncSession, name: str) -> None:
    rows = await session.exec(select(WorkflowRow).where(col(WorkflowRow.deleted).is_(False))
                              .order_by(col(WorkflowRow.name)))
    users = [row.name for row in rows.all()
             if name in named_servers(Workflow.model_validate_json(row.spec))]
    if users:
        raise ConflictError(f"server '{name}' cannot be deleted: used by workflow"
                            f"{'s' if len(users) > 1 else ''} {', '.join(users)}",
                            details={"server": name, "workflows": users})


__all__ = ["check_servers", "named_servers", "refuse_if_used"]
