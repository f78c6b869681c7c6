"""The run-if gate: given the outcomes of a job's upstreams, does it run, and if not, why.

Pure functions, no Prefect: the job task calls `decide()` once every upstream is done. Two
ways to say when a job runs compile to this one gate:

* edge mode, `run_if: all | any` with `needs: [{job, on}]`;
* rule mode, `run_if: <Airflow trigger rule>` with plain needs, evaluated exactly as Airflow's
  `TriggerRuleDep._evaluate_direct_relatives` does once all upstreams are done, including which
  of SKIPPED / UPSTREAM_FAILED a job that does not run gets.

A CANCELLED upstream counts as failed (Airflow marks a killed task failed).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from flowforge.core.wire import JobState

EdgeOn = Literal["success", "failure", "completion", "always", "true", "false"]

COMPLETED = JobState.COMPLETED
FAILED = JobState.FAILED
SKIPPED = JobState.SKIPPED
UPSTREAM_FAILED = JobState.UPSTREAM_FAILED
CANCELLED = JobState.CANCELLED

EDGE_MODES = frozenset({"all", "any"})
ALIASES = {"at_least_one_success": "one_success", "at_least_one_failed": "one_failed"}
RULES = frozenset({
    "all_success", "all_failed", "all_done", "all_skipped", "one_success", "one_failed",
    "one_done", "none_failed", "none_failed_min_one_success", "none_skipped", "always",
})
ALL_RULES = EDGE_MODES | RULES | frozenset(ALIASES)


@dataclass(frozen=True)
class Upstream:
    """What the gate needs to know of one finished upstream job."""

    name: str
    state: JobState
    condition: bool | None = None


@dataclass(frozen=True)
class Edge:
    job: str
    on: EdgeOn = "success"


@dataclass(frozen=True)
class Decision:
    run: bool
    state: JobState | None = None  # SKIPPED or UPSTREAM_FAILED when run is False
    reason: str | None = None


RUN = Decision(run=True)


def _failed(state: JobState) -> bool:
    return state in (FAILED, UPSTREAM_FAILED, CANCELLED)


def edge_met(edge_on: EdgeOn, up: Upstream) -> bool:
    if edge_on == "success":
        return up.state == COMPLETED
    if edge_on == "failure":
        return _failed(up.state)
    if edge_on == "completion":
        return up.state == COMPLETED or _failed(up.state)
    if edge_on == "always":
        return True
    if edge_on == "true":
        return up.state == COMPLETED and up.condition is True
    return up.state == COMPLETED and up.condition is False


def _describe(ups: Sequence[Upstream]) -> str:
    return ", ".join(f"{u.name}={u.state}" for u in ups)


def _decide_edges(mode: str, edges: Sequence[Edge], ups: Mapping[str, Upstream]) -> Decision:
    met = [edge_met(e.on, ups[e.job]) for e in edges]
    if (all(met) if mode == "all" else any(met)):
        return RUN
    unmet = [e for e, ok in zip(edges, met, strict=True) if not ok]
    blocked_by_failure = [e.job for e in unmet if e.on == "success" and _failed(ups[e.job].state)]
    wanted = ", ".join(f"{e.job} on {e.on} (was {ups[e.job].state}"
                       + (f", condition {ups[e.job].condition}" if e.on in ("true", "false") else "")
                       + ")" for e in unmet)
    reason = f"run_if {mode}: not met: {wanted}"
    if blocked_by_failure:
        return Decision(False, UPSTREAM_FAILED, reason)
    return Decision(False, SKIPPED, reason)


def _decide_rule(rule: str, ups: Sequence[Upstream], written: str | None = None) -> Decision:
    success = sum(u.state == COMPLETED for u in ups)
    skipped = sum(u.state == SKIPPED for u in ups)
    failed = sum(u.state in (FAILED, CANCELLED) for u in ups)
    upstream_failed = sum(u.state == UPSTREAM_FAILED for u in ups)
    total = len(ups)
    new: JobState | None = None
    if rule == "all_success":
        if upstream_failed or failed:
            new = UPSTREAM_FAILED
        elif skipped:
            new = SKIPPED
    elif rule == "all_failed":
        if success or skipped:
            new = SKIPPED
    elif rule == "all_done" or rule == "always":
        new = None
    elif rule == "all_skipped":
        if success or failed or upstream_failed:
            new = SKIPPED
    elif rule == "one_success":
        if skipped == total:
            new = SKIPPED
        elif success <= 0:
            new = UPSTREAM_FAILED
    elif rule == "one_failed":
        if not (failed or upstream_failed):
            new = SKIPPED
    elif rule == "one_done":
        if not (failed or success):
            new = SKIPPED
    elif rule == "none_failed":
        if total - success - skipped > 0:
            new = UPSTREAM_FAILED
    elif rule == "none_failed_min_one_success":
        if total - success - skipped > 0:
            new = UPSTREAM_FAILED
        elif skipped == total:
            new = SKIPPED
    elif rule == "none_skipped":
        if skipped:
            new = SKIPPED
    else:  # validated earlier; a bad rule here is a programming error
        raise ValueError(f"unknown run_if rule {rule!r}")
    if new is None:
        return RUN
    shown = rule if written in (None, rule) else f"{written} (= {rule})"
    return Decision(False, new, f"run_if {shown}: upstreams {_describe(ups)}")


def decide(run_if: str, edges: Sequence[Edge], outcomes: Mapping[str, Upstream]) -> Decision:
    """Whether a job runs, given its `run_if`, its incoming edges and its upstreams' outcomes."""
    if not edges:
        return RUN
    rule = ALIASES.get(run_if, run_if)
    if rule in EDGE_MODES:
        return _decide_edges(rule, edges, outcomes)
    return _decide_rule(rule, [outcomes[e.job] for e in edges], written=run_if)


__all__ = [
    "ALIASES",
    "ALL_RULES",
    "CANCELLED",
    "COMPLETED",
    "EDGE_MODES",
    "FAILED",
    "RULES",
    "SKIPPED",
    "UPSTREAM_FAILED",
    "Decision",
    "Edge",
    "Upstream",
    "decide",
    "edge_met",
]
