"""The worker -> API contract: what a flow run publishes about itself, and how it is read.

A flow run writes one `RunSummary` as a Prefect artifact of type `flowforge-run` while it
runs and once more when it ends; the API (and a parent run waiting for a sub-run, and a
dependency-triggered run reading its upstreams) read it back. Both sides use these models, so
a field renamed on one side is a type error on the other instead of a silent `None`.
Summaries published before these models existed have the same fields, so they still read.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

ARTIFACT_TYPE: Final = "flowforge-run"
SUMMARY_VERSION: Final = 1


class JobState(StrEnum):
    """How far one job got. A `StrEnum`, so it reads and compares as its name."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    UPSTREAM_FAILED = "UPSTREAM_FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self not in (JobState.PENDING, JobState.RUNNING)


TERMINAL: Final = frozenset(s for s in JobState if s.terminal)


class RunState(StrEnum):
    """A run as FlowForge shows it; Prefect's finer states map onto these."""

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    CANCELLED = "CANCELLED"

    @property
    def terminal(self) -> bool:
        return self in (RunState.COMPLETED, RunState.FAILED, RunState.CANCELLED)


class _Wire(BaseModel):
    # extra="ignore": a newer worker may publish fields an older API does not know yet.
    model_config = ConfigDict(extra="ignore")


class JobRecord(_Wire):
    """One job of a run: the ledger's row, published as it changes."""

    name: str
    state: JobState = JobState.PENDING
    started_at: str | None = None
    ended_at: str | None = None
    output: Any = None
    error: str | None = None
    #: Why a job did not run (or was cancelled): the gate's rule and the upstreams.
    reason: str | None = None
    condition: bool | None = None
    attempts: int = 0
    #: A repair run's job carried over from the repaired run, not run again.
    reused: bool = False
    #: The script's last `progress(pct, message)`.
    progress: dict[str, Any] | None = None
    #: For-each jobs: `{"total", "done", "failed"}` (+ `not_started`), failed items by index.
    items: dict[str, int] | None = None
    item_errors: dict[str, str] | None = None
    #: `until` jobs: how many times the job ran.
    polls: int | None = None


class Progress(_Wire):
    done: int
    total: int


class RunSummary(_Wire):
    """A whole run as the flow itself knows it; `state` is `RUNNING` until the final write."""

    version: int = SUMMARY_VERSION
    workflow: str
    flow_run_id: str
    state: str = "RUNNING"
    started_at: str | None = None
    ended_at: str | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    trigger: dict[str, Any] | None = None
    outputs: Any = None
    progress: Progress
    jobs: list[JobRecord] = Field(default_factory=list)

    def job(self, name: str) -> JobRecord | None:
        return next((j for j in self.jobs if j.name == name), None)


def read_summary(data: Any) -> RunSummary | None:
    """An artifact's data as a `RunSummary`, or None when it is not one."""
    if not isinstance(data, dict):
        return None
    try:
        return RunSummary.model_validate(data)
    except ValueError:
        return None


__all__ = [
    "ARTIFACT_TYPE",
    "SUMMARY_VERSION",
    "TERMINAL",
    "JobRecord",
    "JobState",
    "Progress",
    "RunState",
    "RunSummary",
    "read_summary",
]
