"""The condition job: one sandboxed Jinja expression decides which `on: true|false` edges fire.

The job's output is `{"result": bool}` and its `condition` is the same bool, so the existing
gate handles the branches: a condition job is a job whose only work is `set_condition`. The
expression's value is read with Python truthiness (as Airflow's ShortCircuitOperator does);
a template that fails at run time (a filter error, a sandbox violation) is a FAILED job with
the message, since the values it reads exist only then.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from flowforge.errors import JobError
from flowforge.runtime import templates

if TYPE_CHECKING:
    from flowforge.spec import Job


def evaluate(job: Job, context: dict[str, Any]) -> tuple[dict[str, bool], bool]:
    """`(output, condition)` of a condition job."""
    assert job.if_expr is not None  # guaranteed by the spec
    try:
        value = templates.render(job.if_expr, context)
    except templates.TemplateError as exc:
        raise JobError(f"job '{job.name}': if: {exc}") from exc
    result = bool(value)
    return {"result": result}, result


__all__ = ["evaluate"]
