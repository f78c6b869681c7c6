"""Condition jobs: one sandboxed Jinja expression decides which `on: true|false` edges fire.

The job's output is `{"result": bool}` and its `condition` is the same bool, so the existing
gate handles the branches: a condition job is a job whose only work is `set_condition`. The
expression's value is read with Python truthiness (as Airflow's ShortCircuitOperator does);
a template that fails at run time (a filter error, a sandbox violation) is a FAILED job with
the message, since the values it reads exist only then.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from flowforge.core import templates
from flowforge.core.errors import JobError
from flowforge.core.jobs import ConditionJob
from flowforge.runtime.kinds.base import JobContext, KindResult


def evaluate(job: ConditionJob, context: Mapping[str, Any]) -> tuple[dict[str, bool], bool]:
    """`(output, condition)` of a condition job."""
    assert job.if_expr is not None  # guaranteed by the spec
    try:
        value = templates.render(job.if_expr, context)
    except templates.TemplateError as exc:
        raise JobError(f"job '{job.name}': if: {exc}") from exc
    result = bool(value)
    return {"result": result}, result


def run(ctx: JobContext) -> KindResult:
    assert isinstance(ctx.job, ConditionJob)
    return evaluate(ctx.job, ctx.context)


__all__ = ["evaluate", "run"]
