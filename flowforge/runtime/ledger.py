"""The ledger of one flow run: every job's record, in one place, masked as it is written.

Upstream results travel through the ledger rather than task parameters, because templates may
read any ancestor, not only direct upstreams. The ledger is also what the API reads: the
`Publisher` writes its `summary()` to the `flowforge-run` artifact as jobs finish and once more
at the end, so `GET /runs/{id}` is complete the moment the run is terminal, while Prefect's own
task-run records may trail by tens of seconds under load.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flowforge.core.secretrefs import Masker
from flowforge.core.templates import RenderContext
from flowforge.core.wire import TERMINAL, JobRecord, JobState, Progress, RunSummary
from flowforge.runtime.publisher import summary_output


def now() -> str:
    return datetime.now(UTC).isoformat()


class Ledger:
    """Job records of one run; thread-safe, every write masked, every change signalled."""

    def __init__(self, workflow: str, flow_run_id: str, order: list[str], inputs: dict[str, Any],
                 trigger: dict[str, Any], masker: Masker,
                 on_change: Callable[[], None] = lambda: None) -> None:
        self.workflow = workflow
        self.flow_run_id = flow_run_id
        self.order = order
        self.inputs = inputs
        self.trigger = trigger
        self.masker = masker
        self.on_change = on_change
        self.started_at = now()
        self._lock = threading.Lock()
        self._records = {name: JobRecord(name=name) for name in order}

    def update(self, name: str, **fields: Any) -> JobRecord:
        """Change one job's record (output and error masked first); returns a copy of it."""
        for key in ("output", "error"):
            if fields.get(key) is not None:
                fields[key] = self.masker.mask(fields[key])
        with self._lock:
            record = self._records[name]
            for key, value in fields.items():
                setattr(record, key, value)
            copy = record.model_copy()
        self.on_change()
        return copy

    def record(self, name: str) -> JobRecord:
        with self._lock:
            return self._records[name].model_copy()

    def states(self) -> dict[str, JobState]:
        with self._lock:
            return {name: r.state for name, r in self._records.items()}

    def mark_unfinished(self, state: JobState, reason: str) -> None:
        """Every job not yet terminal ends in `state` with `reason` (the run is ending)."""
        with self._lock:
            for record in self._records.values():
                if record.state not in TERMINAL:
                    record.state, record.reason, record.ended_at = state, reason, now()

    def summary(self, final_state: str | None = None, outputs: Any = None) -> RunSummary:
        """The run as published: outputs too large to publish are replaced by their size."""
        with self._lock:
            jobs = [self._records[n].model_copy() for n in self.order]
        for job in jobs:
            job.output = summary_output(job.output)
        done = sum(j.state in TERMINAL for j in jobs)
        return RunSummary(
            workflow=self.workflow, flow_run_id=self.flow_run_id,
            state=final_state or "RUNNING", started_at=self.started_at,
            ended_at=now() if final_state else None, inputs=self.inputs, trigger=self.trigger,
            outputs=outputs, progress=Progress(done=done, total=len(jobs)), jobs=jobs)

    def context(self, item: Any = None) -> RenderContext:
        """What a job's templates can read; completed jobs' outputs are read strictly."""
        jobs: dict[str, dict[str, Any]] = {}
        strict: dict[int, str] = {}
        with self._lock:
            for name, r in self._records.items():
                if r.state not in TERMINAL:
                    continue
                jobs[name] = {"state": r.state, "output": r.output, "error": r.error,
                              "condition": r.condition}
                if r.state == JobState.COMPLETED and isinstance(r.output, dict | list):
                    strict[id(r.output)] = f"jobs.{name}.output"
        return RenderContext({
            "inputs": self.inputs,
            "jobs": jobs,
            "item": item,
            "trigger": self.trigger,
            "run": {"id": self.flow_run_id, "workflow": self.workflow,
                    "started_at": self.started_at},
        }, strict)

    def shared_input(self, upstream: dict[str, JobRecord]) -> dict[str, Any]:
        """The part of a script's `input.json` that does not depend on params or the item."""
        return {"inputs": self.inputs,
                "jobs": {u: {"state": r.state, "output": r.output, "condition": r.condition}
                         for u, r in upstream.items()},
                "trigger": self.trigger}


__all__ = ["Ledger", "now"]
