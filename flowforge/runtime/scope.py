"""What one flow run shares between its job threads: spec, ledger, masker, stop, executors.

A job task finds its run here by its flow-run id (`RunScope.current()`), since Prefect hands a
task only its own arguments. Every piece has one job: the ledger records, the masker hides
secrets, `Stop` says whether the run is stopping and why, the executors run scripts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prefect.context import TaskRunContext

from flowforge.core.jobs import JobBase, Need
from flowforge.core.secretrefs import Masker
from flowforge.core.workflow import Workflow
from flowforge.runtime.executors import RunExecutors
from flowforge.runtime.ledger import Ledger
from flowforge.runtime.settings import WorkerSettings


class Stop:
    """Whether the run is stopping (fail-fast, cancellation), and which job tripped fail-fast.

    Sub-workflow waits, polls and for-each items watch `event`, so a stop ends them at once.
    """

    def __init__(self) -> None:
        self.event = threading.Event()
        self.fail_fast_by: str | None = None
        self._lock = threading.Lock()

    def is_set(self) -> bool:
        return self.event.is_set()

    def set(self) -> None:
        self.event.set()

    def trip(self, job: str) -> bool:
        """Job `job` failed for good under fail-fast; True if it is the first to."""
        with self._lock:
            if self.fail_fast_by is not None:
                return False
            self.fail_fast_by = job
        self.event.set()
        return True

    @property
    def reason(self) -> str:
        return (f"fail_fast: job '{self.fail_fast_by}' failed" if self.fail_fast_by
                else "the run was stopped while this job ran")


@dataclass
class RunScope:
    spec: Workflow
    flow_run_id: str
    needs: dict[str, list[Need]]
    ledger: Ledger
    masker: Masker
    executors: RunExecutors
    settings: WorkerSettings
    stop: Stop = field(default_factory=Stop)
    #: A repair run's reused jobs: the original run's records of jobs that completed.
    reused: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: For-each jobs' item state (`foreach.Mapping`), by job.
    mappings: dict[str, Any] = field(default_factory=dict)
    #: For-each jobs' item tasks (`tasks.item_task`), by job.
    item_tasks: dict[str, Any] = field(default_factory=dict)
    jobs: dict[str, JobBase] = field(default_factory=dict)

    _running: ClassVar[dict[str, RunScope]] = {}
    _lock: ClassVar[threading.Lock] = threading.Lock()

    def __post_init__(self) -> None:
        self.jobs = self.jobs or self.spec.jobs_by_name()

    @property
    def trigger(self) -> dict[str, Any]:
        return self.ledger.trigger

    def kill_all_soon(self) -> None:
        """Stop every running job of the run, in the background: killing waits out a grace
        period, and the job that asked (a fail-fast failure) should not wait with it."""
        threading.Thread(target=self.executors.kill_all, name="flowforge-stop",
                         daemon=True).start()

    def register(self) -> None:
        with RunScope._lock:
            RunScope._running[self.flow_run_id] = self

    def unregister(self) -> None:
        with RunScope._lock:
            RunScope._running.pop(self.flow_run_id, None)

    @classmethod
    def current(cls) -> RunScope:
        """The run of the calling task run."""
        ctx = TaskRunContext.get()
        if ctx is None:
            raise RuntimeError("no task run context")
        with cls._lock:
            return cls._running[str(ctx.task_run.flow_run_id)]


__all__ = ["RunScope", "Stop"]
