"""The API side of the `workflow` job check: load the stored workflows, apply the rule.

The workflows router calls `check_calls` before storing a document (create, replace and
validate), so a call to an unknown workflow or a call cycle through other workflows is a 422
and nothing is stored. The rule itself is `flowforge.core.workflow_calls` (no database there).
"""

from __future__ import annotations

from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth import Principal
from api.tables import WorkflowRow
from flowforge.core.errors import SpecError
from flowforge.core.workflow import Workflow
from flowforge.core.workflow_calls import call_problems, calls


async def check_calls(session: AsyncSession, wf: Workflow, who: Principal | None = None) -> None:
    """Raise `SpecError` (422) naming each bad `workflow` job of `wf`; cheap when it has none.

    A workflow with no workflow jobs can still close a cycle (b calls a, now a calls b is
    refused when a is stored, whichever comes second), so only documents with calls need the
    stored graph.
    """
    if not calls(wf):
        return
    rows = await session.exec(select(WorkflowRow).where(col(WorkflowRow.deleted).is_(False)))
    # A workflow in a namespace the defining key does not act in is not there for it.
    stored = {row.name: Workflow.model_validate_json(row.spec) for row in rows.all()
              if who is None or who.sees(row.namespace) or row.name == wf.name}
    problems = call_problems(wf, stored)
    if problems:
        raise SpecError(problems)


__all__ = ["check_calls"]
