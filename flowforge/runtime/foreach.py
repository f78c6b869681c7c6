"""For-each jobs: one Prefect task run per item, mapped when the list is known.

The list usually comes from an upstream's output, so it exists only once the job's own task
runs; the job task then maps an item task with Prefect's `TaskRunner.map` (other arguments
`unmapped`) on a `ThreadPoolTaskRunner(max_workers=max_parallel)` of its own. A dedicated pool,
not the flow's: the job task already holds one of the flow's threads and blocks until its
items finish, so items queued on the same pool could wait forever (Prefect issue #17060).
Item task runs are named `job[index]` and are children of the job's task run in the UI.

Items run through the same `execute.run_once` as any job, with the item in a context variable
that the templates (`{{ item }}`) and the helper input (`input()["item"]`) read. Each
item is a task run of its own, so the job's `retries` apply per item, as with Prefect's map.
Outputs are collected in item order; failed items leave `None` and an error by index.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Callable, Sequence
from collections.abc import Mapping as MappingType
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from prefect.context import TaskRunContext
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.utilities.annotations import unmapped

from flowforge.core import templates
from flowforge.core.errors import JobError
from flowforge.core.jobs import JobBase
from flowforge.core.wire import JobRecord
from flowforge.runtime import limits
from flowforge.runtime.executors import workdir
from flowforge.runtime.scope import RunScope

if TYPE_CHECKING:
    from prefect import Task
    from prefect.futures import PrefectConcurrentFuture

#: `run_once(scope, job, upstream, attempt) -> (output, condition)`: one run of the job.
RunOnce = Callable[[RunScope, JobBase, dict[str, JobRecord], int], tuple[Any, bool | None]]

_NO_ITEM = object()
#: Seconds between looks at whether the run is stopping while a for-each job waits.
_STOP_CHECK = 0.2
_ITEM: contextvars.ContextVar[Any] = contextvars.ContextVar("flowforge_item", default=_NO_ITEM)


def current_item() -> Any:
    """The for-each item the calling code runs for, or None outside a for-each item."""
    item = _ITEM.get()
    return None if item is _NO_ITEM else item


def in_item() -> bool:
    return _ITEM.get() is not _NO_ITEM


@dataclass
class Mapping:
    """The state of one for-each job's items, shared by its item task runs."""

    items: list[Any]
    upstream: dict[str, JobRecord]
    outputs: list[Any]
    run_once: RunOnce
    #: `WorkflowRun.shared_input`, each value encoded once (`workdir.encode`) for every item.
    shared_input: dict[str, Any] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    done: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)


def resolve_items(job: JobBase, context: MappingType[str, Any]) -> list[Any]:
    try:
        items = templates.render(job.for_each, context)
    except templates.TemplateError as exc:
        raise JobError(f"job '{job.name}': for_each: {exc}") from exc
    if items is None:
        items = []  # an upstream that produced nothing maps over nothing
    if not isinstance(items, list):
        raise JobError(f"job '{job.name}': for_each must give a list, got "
                       f"{type(items).__name__}: {templates.to_env_value(items)[:200]}")
    return items


def run(scope: RunScope, job: JobBase, upstream: dict[str, JobRecord], item_task: Task[..., Any],
        run_once: RunOnce) -> list[Any]:
    """Run every item; the job's output is the list of item outputs in order."""
    ledger = scope.ledger
    items = resolve_items(job, ledger.context())
    if not items:
        ledger.update(job.name, items={"total": 0, "done": 0, "failed": 0})
        return []
    try:
        shared = {key: workdir.encode(value, "input")
                  for key, value in ledger.shared_input(upstream).items()}
    except ValueError as exc:
        raise JobError(f"job '{job.name}': {exc}") from exc
    mapping = Mapping(items=items, upstream=upstream, outputs=[None] * len(items),
                      run_once=run_once, shared_input=shared)
    scope.mappings[job.name] = mapping
    ledger.update(job.name, items={"total": len(items), "done": 0, "failed": 0})
    width = min(len(items), job.max_parallel or scope.spec.settings.max_parallel_jobs)
    runner: ThreadPoolTaskRunner[Any]
    with ThreadPoolTaskRunner(max_workers=width) as runner:
        futures = cast("list[PrefectConcurrentFuture[Any]]", list(runner.map(
            item_task, {"job": unmapped(job.name), "index": range(len(items))})))
        _wait_or_stop(futures, scope.stop.event)
    unstarted: list[int] = []  # cancelled by a stopping run before they reached Prefect
    failed: list[int] = []
    for i, future in enumerate(futures):
        if future.wrapped_future.cancelled():
            unstarted.append(i)
        elif not future.state.is_completed():
            failed.append(i)
    for i in failed:
        mapping.errors.setdefault(i, f"ended {futures[i].state.name}")
    counts = {"total": len(items), "done": len(items) - len(unstarted), "failed": len(failed)}
    if unstarted:
        counts["not_started"] = len(unstarted)
    ledger.update(job.name, items=counts,
                  item_errors={str(i): scope.masker.mask(mapping.errors[i]) for i in failed} or None)
    if unstarted:  # only a stopping run cancels items; the job ends with it
        raise JobError(f"job '{job.name}': the run is stopping: {len(unstarted)} of "
                       f"{len(items)} items not started, {len(failed)} failed or stopped")
    if failed and not job.allow_partial:
        first = mapping.errors[failed[0]]
        raise JobError(f"job '{job.name}': {len(failed)} of {len(items)} items failed; "
                       f"first: {job.name}[{failed[0]}]: {first}")
    return mapping.outputs


def _wait_or_stop(futures: Sequence[PrefectConcurrentFuture[Any]], stopping: threading.Event) -> None:
    """Wait for every item; once the run is stopping, cancel the items not yet started.

    `.map()` queues every item at once. Without this, a fail-fast or cancelled run still took
    each queued item through Prefect's task engine only to fail it at once: a task run
    created and failed per item, 10 s for 2,300 items of a 3,000-item job, with the UI full
    of them. A cancelled item never reached Prefect, so it leaves no task run at all.
    """
    left = len(futures)
    all_done = threading.Event()
    lock = threading.Lock()

    def one_done(_: object) -> None:
        nonlocal left
        with lock:
            left -= 1
            if not left:
                all_done.set()

    for future in futures:  # runs at once for a future already done; cancelling runs it too
        future.wrapped_future.add_done_callback(one_done)
    # No way to wait on two events: the stop is looked at a few times a second.
    while not all_done.wait(_STOP_CHECK):
        if stopping.is_set():
            for future in futures:
                future.wrapped_future.cancel()  # False for one running or done: it goes on
            all_done.wait()
    for future in futures:
        if not future.wrapped_future.cancelled():
            future.wait()  # keeps the final state on the future (no API read for `.state`)


def run_item(job: str, index: int) -> Any:
    """The body of one item task run."""
    scope = RunScope.current()
    spec = scope.jobs[job]
    mapping = scope.mappings[job]
    if scope.stop.is_set():  # started just before its job cancelled the queued items
        mapping.errors[index] = "not started: the run is stopping"
        raise JobError(f"{job}[{index}]: not started, the run is stopping")
    ctx = TaskRunContext.get()
    attempt = ctx.task_run.run_count if ctx else 1
    token = _ITEM.set(mapping.items[index])
    try:
        with limits.hold(spec.concurrency):
            output, _ = mapping.run_once(scope, spec, mapping.upstream, attempt)
    except Exception as exc:
        mapping.errors[index] = exc.message if isinstance(exc, JobError) else (
            f"{type(exc).__name__}: {exc}")
        raise
    finally:
        _ITEM.reset(token)
    mapping.outputs[index] = output
    mapping.errors.pop(index, None)
    with mapping.lock:
        mapping.done += 1
        done = mapping.done
    scope.ledger.update(job, items={"total": len(mapping.items), "done": done,
                                    "failed": len(mapping.errors)})
    return None


__all__ = ["Mapping", "RunOnce", "current_item", "in_item", "resolve_items", "run", "run_item"]
