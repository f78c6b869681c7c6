"""The warm runner: Prefect's process worker, with flow runs forked from a warm fork server.

To Prefect it is a process worker (`type = "process"`): it registers on the pool, heartbeats,
proposes Pending, and the runner machinery Prefect's own `ProcessWorker.run` uses
(`FlowRunExecutorContext`: state proposals, the control channel, cancellation, crashed
hooks) supervises each run. Only the starter differs: where Prefect starts a workspace
supervisor interpreter that starts an engine interpreter (two imports of Prefect per run),
`ForkStarter` forks a child of a fork server that imported everything once.

It also learns of new runs from Prefect's event stream: a `prefect.flow-run.Scheduled` event
of its pool wakes the submission loop at once, and the poll (PREFECT_WORKER_QUERY_SECONDS)
stays as the fallback for a dropped stream.

And it keeps a pool of pre-warmed containers for its runs' container jobs
(`FLOWFORGE_CONTAINER_WARM`, `runtime.executors.container_pool`) when a Docker engine is
there, telling the runs it forks where to claim them (`FLOWFORGE_CONTAINER_POOL`); stopping
the worker removes those not handed out.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from prefect.events.clients import get_events_subscriber
from prefect.events.filters import EventFilter, EventNameFilter, EventOccurredFilter
from prefect.flows import load_flow_from_flow_run
from prefect.runner._flow_run_executor import FlowRunExecutionResult, FlowRunExecutorContext
from prefect.types._datetime import now
from prefect.workers.process import (
    ProcessJobConfiguration,
    ProcessWorker,
    ProcessWorkerResult,
)

from flowforge.runtime.executors.container_pool import ContainerPool
from flowforge.runtime.settings import WorkerSettings
from flowforge.stack.runner.forking import ForkStarter, fork_context, warm_up
from flowforge.stack.runner.settings import RunnerSettings

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.events.schemas.events import Event
    from prefect.runner._process_manager import ProcessHandle

logger = logging.getLogger("flowforge.runner")
SCHEDULED = "prefect.flow-run.Scheduled"
#: After the event stream fails, wait this long before subscribing again (the poll covers it).
RESUBSCRIBE_SECONDS = 5.0


# Prefect registers worker classes by `type` and warns when a subclass takes an existing one;
# taking "process" is the point (the pool stays a process pool), in this process alone.
warnings.filterwarnings("ignore", message="Type 'WarmWorker'", category=UserWarning)


class WarmWorker(ProcessWorker):
    """A process worker whose flow runs are forked, and which wakes on Scheduled events."""

    _description = ("Process worker of FlowForge: flow runs forked from a warm fork server "
                    "(Prefect and FlowForge already imported), woken by Prefect's events.")
    _display_name = "FlowForge warm runner"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._fork = fork_context()
        self._wake = anyio.Event()
        self._extras: anyio.abc.TaskGroup | None = None
        self._runs: FlowRunExecutorContext | None = None
        settings = RunnerSettings()
        self._markers = settings.run_markers
        self._containers = ContainerPool(settings.container_warm,
                                         job_root=WorkerSettings().job_root)

    async def __aenter__(self) -> WarmWorker:
        # The fork server imports Prefect and FlowForge once, now, not on the first run.
        await anyio.to_thread.run_sync(warm_up, self._fork)
        # One executor context for the worker's life, as Prefect's Runner keeps one: its
        # client, control channel and cancellation observer (a websocket) are set up once,
        # not per run as `ProcessWorker.run` does (~0.1 s a run). Entered first, left last:
        # the worker's own exit waits for the runs in flight, which use it.
        self._runs = FlowRunExecutorContext()
        await self._runs.__aenter__()
        try:
            await super().__aenter__()
        except BaseException as exc:
            await self._runs.__aexit__(type(exc), exc, exc.__traceback__)
            raise
        if await anyio.to_thread.run_sync(self._containers.start):
            # Forked runs take their environment from ours (`forking.run_environment`).
            os.environ["FLOWFORGE_CONTAINER_POOL"] = str(self._containers.socket_path)
        self._extras = anyio.create_task_group()
        await self._extras.__aenter__()
        self._extras.start_soon(self._listen)
        self._extras.start_soon(self._submit_when_woken)
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        try:
            if self._extras is not None:
                self._extras.cancel_scope.cancel()
                with contextlib.suppress(BaseException):
                    await self._extras.__aexit__(None, None, None)
                self._extras = None
            await super().__aexit__(*exc_info)
        finally:
            os.environ.pop("FLOWFORGE_CONTAINER_POOL", None)
            # Shielded: a worker stopping by signal exits cancelled, and the ready containers
            # must still go.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._containers.close)
            if self._runs is not None:
                runs, self._runs = self._runs, None
                await runs.__aexit__(None, None, None)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        """As `ProcessWorker.run` (prefect/workers/process.py), with `ForkStarter`."""
        if task_status is None:
            task_status = anyio.TASK_STATUS_IGNORED
        if self._runs is None:
            raise RuntimeError("the warm runner is not started")
        ctx = self._runs
        working_dir = Path(configuration.working_dir or Path.cwd()).resolve()
        execution: FlowRunExecutionResult | None = None
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            starter = ForkStarter(ctx=self._fork, cwd=working_dir, env=configuration.env,
                                  control_channel=ctx.control_channel, markers=self._markers)
            executor = ctx.create_executor(flow_run, starter,
                                           resolve_flow=load_flow_from_flow_run,
                                           propose_submitting=False)

            async def execute(*, task_status: anyio.abc.TaskStatus[ProcessHandle]
                              = anyio.TASK_STATUS_IGNORED) -> None:
                nonlocal execution
                execution = await executor.submit(task_status=task_status)

            async with anyio.create_task_group() as group:
                handle = await group.start(execute)
                if handle.pid is None:
                    raise RuntimeError("Flow run process has no PID")
                task_status.started(handle.pid)
        if execution is None or execution.status_code is None:
            raise RuntimeError("Failed to start flow run process.")
        return ProcessWorkerResult(status_code=execution.status_code,
                                   identifier=str(execution.handle.pid))

    async def _listen(self) -> None:
        """Set `_wake` on every Scheduled event of this pool; resubscribe after a failure."""
        while True:
            try:
                # Live events only: `until` is far ahead, or the stream filters them out.
                window = EventOccurredFilter(since=now("UTC"),
                                             until=now("UTC") + datetime.timedelta(days=3650))
                event_filter = EventFilter(occurred=window,
                                           event=EventNameFilter(name=[SCHEDULED]))
                async with get_events_subscriber(filter=event_filter) as events:
                    self._wake.set()  # anything scheduled while not subscribed
                    async for event in events:
                        if self._of_my_pool(event):
                            self._wake.set()
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:  # the poll still runs; try the stream again later
                logger.warning("event stream unavailable (%s); polling only for %.0f s",
                               exc, RESUBSCRIBE_SECONDS)
            await anyio.sleep(RESUBSCRIBE_SECONDS)

    def _of_my_pool(self, event: Event) -> bool:
        pools = [r.get("prefect.resource.name") for r in event.related
                 if r.get("prefect.resource.role") == "work-pool"]
        return not pools or self._work_pool_name in pools

    async def _submit_when_woken(self) -> None:
        """One query per wake, however many events arrived meanwhile."""
        while True:
            await self._wake.wait()
            self._wake = anyio.Event()
            try:
                await self.get_and_submit_flow_runs()
            except anyio.get_cancelled_exc_class():
                raise
            except Exception as exc:  # the poll loop retries and reports as Prefect does
                logger.debug("woken submission failed: %s", exc)


__all__ = ["SCHEDULED", "WarmWorker"]
