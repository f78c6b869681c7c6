"""Runs as the API takes and shows them: start, repair, rerun, read, list, logs, cancel."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from flowforge.core.wire import JobState, RunState


class RunCreate(BaseModel):
    inputs: dict[str, Any] = Field(default_factory=dict)


class RunCreated(BaseModel):
    run_id: str
    prefect_ui_url: str


class RepairCreate(BaseModel):
    #: completed jobs to run again as well (with their dependants); failed, cancelled and
    #: not-run jobs always are
    jobs: list[str] = Field(default_factory=list)


class RepairCreated(RunCreated):
    repair_of: str
    rerun: list[str]
    reused: list[str]


class RerunCreate(BaseModel):
    #: inputs to change; the others keep the original run's values
    inputs: dict[str, Any] = Field(default_factory=dict)


class RerunCreated(RunCreated):
    rerun_of: str


class Progress(BaseModel):
    done: int
    total: int


class JobRunPublic(BaseModel):
    name: str
    state: JobState
    started_at: datetime | None = None
    ended_at: datetime | None = None
    output: Any = None
    error: str | None = None
    reason: str | None = None
    attempts: int = 0
    condition: bool | None = None
    #: a repair run's job carried over from the repaired run, not run again
    reused: bool = False
    #: for-each jobs: `{"total", "done", "failed"}` (+ `not_started` when the run stopped
    #: with items queued) and each failed item's error by index
    items: dict[str, int] | None = None
    item_errors: dict[str, str] | None = None
    #: `until` jobs: how many times the job ran
    polls: int | None = None


class RunPublic(BaseModel):
    id: str
    workflow: str
    state: RunState
    prefect_state: str | None = None
    #: Why the run ended as it did, as Prefect recorded it (a crash names the dead process).
    message: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    inputs: dict[str, Any] = Field(default_factory=dict)
    outputs: Any = None
    trigger: dict[str, Any] | None = None
    progress: Progress
    jobs: list[JobRunPublic]
    prefect_ui_url: str


class RunListItem(BaseModel):
    id: str
    workflow: str
    state: RunState
    prefect_state: str | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


class LogLine(BaseModel):
    timestamp: datetime
    level: str
    job: str | None = None
    message: str


class CancelResult(BaseModel):
    id: str
    state: str


__all__ = ["CancelResult", "JobRunPublic", "LogLine", "Progress", "RepairCreate",
           "RepairCreated", "RerunCreate", "RerunCreated", "RunCreate", "RunCreated",
           "RunListItem", "RunPublic"]
