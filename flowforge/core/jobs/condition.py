"""`type: condition`: one sandboxed expression decides which `on: true|false` edges fire."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from flowforge.core import templates
from flowforge.core.checks import Bad, CheckContext
from flowforge.core.jobs.base import JobBase


class ConditionJob(JobBase):
    template_fields: ClassVar[tuple[str, ...]] = ("if_expr",)
    secret_fields: ClassVar[frozenset[str]] = frozenset()  # a condition publishes its result

    type: Literal["condition"] = "condition"
    # `if` is a Python keyword, so the attribute is `if_expr`, aliased
    if_expr: str | None = Field(default=None, alias="if")

    def check_kind(self, ctx: CheckContext, bad: Bad) -> None:
        if self.if_expr is None:
            bad("if", "a condition job needs 'if' (a single \"{{ expression }}\")")
        elif not (templates.is_template(self.if_expr)
                  and templates.single_expression(self.if_expr) is not None):
            bad("if", "'if' must be a single \"{{ expression }}\", e.g. "
                "\"{{ jobs.validate.output.ok }}\"")
        for attr in ("for_each", "until"):
            if getattr(self, attr) is not None:
                bad(attr, f"'{attr}' does not apply to a condition job")


__all__ = ["ConditionJob"]
