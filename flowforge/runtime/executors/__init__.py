"""Executors: one per target kind, behind one interface (`base.Executor`), looked up by kind.

`EXECUTORS` maps a target kind to its executor class, imported on first use so that a flow
run pays for Docker's or asyncssh's import only when it has such jobs. A run holds one
executor per kind it uses (`RunExecutors`); `flowforge gc` and `flowforge up` reap every
kind's leftovers through the same classes (`reap_all`). A target kind without an executor
here is an error at run time, never a local run.
"""

from __future__ import annotations

import contextlib
import importlib
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from flowforge.core.errors import JobError
from flowforge.runtime.executors.base import Executor, RunInfo

#: target kind -> "module:class" of its executor.
EXECUTORS: dict[str, str] = {
    "local": "flowforge.runtime.executors.launcher:LauncherExecutor",
    "container": "flowforge.runtime.executors.container:ContainerExecutor",
    "ssh": "flowforge.runtime.executors.ssh:SshExecutor",
}


def executor_class(kind: str) -> type[Executor]:
    """The executor class of a target kind; `JobError` for a kind with none."""
    try:
        module, _, name = EXECUTORS[kind].partition(":")
    except KeyError:
        raise JobError(f"no executor for target kind '{kind}' on this worker (known: "
                       f"{', '.join(EXECUTORS)})") from None
    cls: type[Executor] = getattr(importlib.import_module(module), name)
    return cls


class RunExecutors:
    """The executors of one flow run: made on first use, killed and closed with the run."""

    def __init__(self, run: RunInfo) -> None:
        self.run = run
        self._made: dict[str, Executor] = {}
        self._lock = threading.Lock()

    def prepare(self, kinds: Iterable[str]) -> None:
        """The run has jobs of these target kinds: let each executor get ready."""
        for kind in sorted(set(kinds)):
            with contextlib.suppress(JobError):  # the job itself reports an unknown kind
                executor_class(kind).start_run(self.run)

    def get(self, kind: str) -> Executor:
        with self._lock:
            executor = self._made.get(kind)
            if executor is None:
                executor = self._made[kind] = executor_class(kind).for_run(self.run)
            return executor

    def _each(self, call: Callable[[Executor], None]) -> None:
        with self._lock:
            made = list(self._made.values())
        for executor in made:
            with contextlib.suppress(Exception):  # one executor failing must not spare another
                call(executor)

    def kill_all(self, grace: float = 2.0) -> None:
        """Stop every job of the run, on every target, now."""
        self._each(lambda e: e.kill_all(grace))

    def close(self) -> None:
        self._each(lambda e: e.close())


@dataclass(frozen=True)
class Reaped:
    """What reaping one target kind's leftovers did: the names removed, or why it could not."""

    kind: str
    removed: list[str]
    error: str | None = None


def reap_all(is_finished: Callable[[str], bool], scope: str | None = None) -> list[Reaped]:
    """Every target kind's leftovers of runs that are over, removed, kind by kind: one kind
    that cannot be reached (no Docker engine here) does not stop the others."""
    out = []
    for kind in EXECUTORS:
        try:
            out.append(Reaped(kind, executor_class(kind).reap(is_finished, scope)))
        except Exception as exc:  # the SDK's own errors: the engine is not there
            out.append(Reaped(kind, [], f"{type(exc).__name__}: {exc}"))
    return out


__all__ = ["EXECUTORS", "Reaped", "RunExecutors", "executor_class", "reap_all"]
