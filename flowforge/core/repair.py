"""Repair runs: which jobs of a finished run to run again, and which outputs to reuse.

A repair re-runs the jobs that did not complete (failed, cancelled, skipped, upstream-failed,
never started) and everything downstream of them, and reuses the records of the other
completed jobs, as Databricks' "repair run" does. Downstream jobs are re-run even when they
completed: their inputs may change. Pure functions over the run summary and the spec, so the
API decides and the new run only obeys its `flowforge_repair` parameter.
"""

from __future__ import annotations

from typing import Any

from flowforge.core.errors import InvalidRequestError
from flowforge.core.wire import JobState, RunSummary
from flowforge.core.workflow import Workflow, descendants

#: The fields of a job record a repair run carries over for a reused job.
REUSED_FIELDS = ("state", "started_at", "ended_at", "output", "error", "reason", "condition",
                 "attempts")


def plan(wf: Workflow, summary: RunSummary,
         extra: list[str] | None = None) -> tuple[list[str], dict[str, dict[str, Any]]]:
    """`(jobs to run again, {reused job: its record})` for a repair of the run `summary`.

    `extra` names completed jobs the caller wants run again too (with their dependants).
    A completed job whose published output was truncated cannot be reused faithfully, so
    it runs again. The reused records travel as the repair run's `flowforge_repair`
    parameter, so they are plain JSON.
    """
    records = {j.name: j for j in summary.jobs}
    names = {job.name for job in wf.jobs}
    unknown = [n for n in extra or [] if n not in names]
    if unknown:
        raise InvalidRequestError("jobs", f"unknown job(s) to re-run: {', '.join(unknown)}")
    completed = {name for name, r in records.items() if r.state == JobState.COMPLETED
                 and not (isinstance(r.output, dict) and r.output.get("truncated"))}
    rerun_roots = {job.name for job in wf.jobs if job.name not in completed} | set(extra or [])
    rerun = descendants(wf, rerun_roots)
    reused = {name: records[name].model_dump(mode="json", include=set(REUSED_FIELDS))
              for name in completed if name not in rerun and name in names}
    order = [job.name for job in wf.jobs if job.name in rerun]
    return order, reused


__all__ = ["REUSED_FIELDS", "plan"]
