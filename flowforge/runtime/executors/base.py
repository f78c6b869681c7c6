"""The one interface every target's executor implements, and what it is given and returns.

Modelled on Prefect's `BaseWorker`: a typed request in, a typed result out, and a life per
flow run. An executor is made once per run for the target kind it serves (`for_run`), runs
that run's jobs of its kind from many threads (`run`), kills them when the run stops
(`kill_all`) and lets go of what it holds when the run ends (`close`). Two class-level hooks
serve a run before any job and the operator after a crash: `start_run` warms up or cleans up
(the launcher process, leftover containers), `reap` removes what a killed worker left behind
(`flowforge gc`, `flowforge up`).

Job failures come back as `ScriptResult.error`, never as exceptions: the caller decides what a
failure means (retry, continue_on_error...).
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

if TYPE_CHECKING:
    from flowforge.core.targets import TargetBase
    from flowforge.runtime.executors.workdir import EncodedJSON
    from flowforge.runtime.settings import WorkerSettings

Runtime = Literal["bash", "python", "node"]
LogFn = Callable[[str, str], None]
_HIDDEN_PREFIXES: Final = ("PREFECT_", "FLOWFORGE_")


@dataclass
class ScriptRequest:
    """One script to run, with every template already resolved to plain data."""

    name: str
    runtime: Runtime
    script: str
    env: dict[str, str] = field(default_factory=dict)
    # Each may also come already encoded as its file's text (`workdir.EncodedJSON`).
    input: dict[str, Any] | EncodedJSON = field(default_factory=dict)
    event: dict[str, Any] | EncodedJSON = field(default_factory=dict)
    variables: dict[str, Any] | EncodedJSON = field(default_factory=dict)
    timeout: float | None = None
    work_root: Path | None = None


@dataclass
class ScriptResult:
    """How a script job ended. `error` is None exactly when the job succeeded."""

    exit_code: int | None
    output: Any = None
    condition: bool | None = None
    variables_set: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] | None = None
    error: str | None = None
    timed_out: bool = False
    duration: float = 0.0
    #: The job directory when the executor was asked to keep it, else None (it was removed).
    job_dir: Path | None = None
    #: Whether `output` stands even though the job failed (an SSH job's result per server).
    output_on_error: bool = False


def failure(error: str, started: float) -> ScriptResult:
    """The result of a job that failed before or instead of running its script."""
    return ScriptResult(exit_code=None, error=error, duration=time.monotonic() - started)


def inherited_env(base: Mapping[str, str]) -> dict[str, str]:
    """What a job inherits of `base`: everything but Prefect's and FlowForge's own settings."""
    return {k: v for k, v in base.items() if not k.startswith(_HIDDEN_PREFIXES)}


@dataclass(frozen=True)
class RunInfo:
    """What an executor may know of the run it serves."""

    flow_run_id: str
    workflow: str
    settings: WorkerSettings
    #: Registers secret values (an SSH credential) with the run's masker.
    on_secret: Callable[[Iterable[str]], None] = lambda values: None
    namespace: str = "default"


class Executor(ABC):
    """Runs script jobs on one kind of target. Safe to share between a run's threads."""

    #: The target kind this executor serves (`target: {<kind>: ...}`).
    kind: ClassVar[str]

    @classmethod
    def for_run(cls, run: RunInfo) -> Executor:
        """The executor a run uses for every job of this kind."""
        return cls()

    @classmethod
    def start_run(cls, run: RunInfo) -> None:
        """A run that has jobs of this kind is starting; must not block it for long."""
        return None  # a hook: most executors need nothing before the first job

    @classmethod
    def reap(cls, is_finished: Callable[[str], bool], scope: str | None = None) -> list[str]:
        """Remove what jobs of runs that are over left behind (a killed worker); names removed.

        `is_finished(run_id)` decides; `scope` limits it to runs of one Prefect API.
        """
        return []

    @abstractmethod
    def run(self, request: ScriptRequest, log: LogFn,
            target: TargetBase | None = None) -> ScriptResult:
        """Run one job to its end, calling `log(stream, line)` for each output line."""

    def kill_all(self, grace: float = 2.0) -> None:
        """Stop every job this executor runs now (the run is stopping)."""
        return None  # a hook: an executor whose jobs end with their calls has nothing to do

    def close(self) -> None:
        """The run is over: release what the executor holds for it."""
        return None  # a hook: most executors hold nothing per run


__all__ = ["Executor", "LogFn", "RunInfo", "Runtime", "ScriptRequest", "ScriptResult", "failure",
           "inherited_env"]
