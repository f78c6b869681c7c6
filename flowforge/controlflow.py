"""Validation of a job's control-flow fields: condition, for-each, loops, backoff, concurrency.

Kept beside `spec.py` as `jobkinds.py` is, so the document module stays a readable contract.
Every problem names the job and the field. Template syntax and unknown roots are checked with
every other template by the spec (`TEMPLATE_ATTRS` below); here are the rules of shape that
pydantic cannot express: which fields go together and which do not.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from flowforge.jobkinds import LABELS as KIND_LABELS
from flowforge.runtime import templates

Bad = Callable[[str, str], None]

#: Template-bearing control-flow fields, walked by the spec's template check.
TEMPLATE_ATTRS = ("if_expr", "for_each", "until")
LABELS = {**KIND_LABELS, "if_expr": "if"}
#: Prefect's global concurrency limit names are free text; FlowForge keeps them slug-like so
#: they read the same in YAML, URLs and the Prefect UI.
LIMIT_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,99}$")
#: Defaults of a polling loop when `until` is set without them.
DEFAULT_INTERVAL = 5.0
DEFAULT_MAX_ATTEMPTS = 10


def extra_roots(field: str) -> set[str]:
    """Template roots a field may read beyond the common ones: `until` sees the job's own
    output and the attempt number."""
    return {"output", "attempt"} if field.endswith(".until") else set()


def _single_expression(value: str) -> bool:
    return templates.is_template(value) and templates.single_expression(value) is not None


def _only_with(job: Any, attrs: tuple[str, ...], owner: str, bad: Bad) -> None:
    for attr in attrs:
        if getattr(job, attr) is not None:
            bad(attr, f"'{attr}' applies only to {owner}")


def check_job(job: Any, bad: Bad) -> None:
    """Problems of one job's control-flow fields, reported through `bad(field, message)`."""
    if job.type == "condition":
        if job.if_expr is None:
            bad("if", "a condition job needs 'if' (a single \"{{ expression }}\")")
        elif not _single_expression(job.if_expr):
            bad("if", "'if' must be a single \"{{ expression }}\", e.g. "
                "\"{{ jobs.validate.output.ok }}\"")
        for attr in ("for_each", "until"):
            if getattr(job, attr) is not None:
                bad(attr, f"'{attr}' does not apply to a condition job")
    elif job.if_expr is not None:
        bad("if", "'if' belongs to condition jobs (type: condition); other jobs say when "
            "they run with needs/run_if")
    if job.for_each is not None:
        if isinstance(job.for_each, str) and not _single_expression(job.for_each):
            bad("for_each", "'for_each' must be a list or a single \"{{ expression }}\" "
                "giving one, e.g. \"{{ jobs.list_files.output.files }}\"")
        elif not isinstance(job.for_each, str | list):
            bad("for_each", "'for_each' must be a list or a \"{{ expression }}\" giving one")
        if job.until is not None:
            bad("until", "'until' cannot be combined with 'for_each' (poll inside each item's "
                "script, or in a job before the for-each)")
    else:
        _only_with(job, ("max_parallel", "allow_partial"), "a for_each job", bad)
    if job.until is None:
        _only_with(job, ("interval", "max_attempts"), "a job with 'until'", bad)
    elif not _single_expression(job.until):
        bad("until", "'until' must be a single \"{{ expression }}\", e.g. "
            "\"{{ output.status == 'done' }}\"")
    if job.backoff is not None or job.jitter is not None:
        if not job.retries:
            bad("backoff" if job.backoff is not None else "jitter",
                "'backoff' and 'jitter' shape retries; set 'retries' too")
        if job.type == "http":
            bad("backoff" if job.backoff is not None else "jitter",
                "http jobs retry inside their executor with exponential backoff already")
    for k, name in enumerate(job.concurrency or []):
        if not isinstance(name, str) or not LIMIT_NAME_RE.match(name):
            bad(f"concurrency[{k}]", f"'{name}' is not a concurrency limit name (lowercase "
                "letters, digits, '_', '.', '-')")
    names = list(job.concurrency or [])
    for dup in sorted({n for n in names if names.count(n) > 1}):
        bad("concurrency", f"lists '{dup}' more than once")


__all__ = ["DEFAULT_INTERVAL", "DEFAULT_MAX_ATTEMPTS", "LABELS", "LIMIT_NAME_RE",
           "TEMPLATE_ATTRS", "check_job", "extra_roots"]
