"""`type: workflow`: another workflow's deployment as a sub-run; its outputs become the output.

Whether the called workflow exists, takes those inputs and does not call back into this one
needs the stored workflows: `flowforge.core.workflow_calls` checks that, given them.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from flowforge.core.checks import Bad, CheckContext
from flowforge.core.jobs.base import JobBase
from flowforge.core.names import WORKFLOW_NAME_RE


class WorkflowJob(JobBase):
    template_fields: ClassVar[tuple[str, ...]] = ("inputs",)

    type: Literal["workflow"] = "workflow"
    workflow: str | None = None
    inputs: dict[str, Any] | None = None
    wait: bool | None = None

    def check_kind(self, ctx: CheckContext, bad: Bad) -> None:
        if not self.workflow:
            bad("workflow", "a workflow job needs 'workflow' (the name of the workflow to run)")
        elif not WORKFLOW_NAME_RE.match(self.workflow):
            bad("workflow", f"'{self.workflow}' is not a workflow name")
        elif self.workflow == ctx.workflow:
            bad("workflow", f"workflow '{ctx.workflow}' calls itself")
        for key in self.inputs or {}:
            if key == "flowforge_trigger":
                bad(f"inputs.{key}", f"input name '{key}' is reserved")


__all__ = ["WorkflowJob"]
