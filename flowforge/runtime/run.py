"""One flow run of a workflow: what the generated flow starts, and how it ends.

The generated flow submits one Prefect task per job (`tasks.job_tasks`), wired with
`wait_for=[allow_failure(f)]` so the Prefect run graph shows the DAG and a failed upstream does
not stop Prefect from starting the downstream task: whether the job runs is the gate's business
(`execute`), not Prefect's. `WorkflowRun.start` sets up what the job threads share
(`scope.RunScope`); `finish` waits for every job and returns the run's own final state.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from pathlib import Path
from typing import Any

from prefect.context import FlowRunContext, SyncClientContext
from prefect.exceptions import Abort
from prefect.futures import PrefectFuture, wait
from prefect.states import Cancelled, Completed, Failed, State

from flowforge.core import templates
from flowforge.core.secretrefs import Masker
from flowforge.core.wire import JobState
from flowforge.core.workflow import Workflow, effective_needs, topological_order
from flowforge.runtime.console import plain_console
from flowforge.runtime.executors import RunExecutors
from flowforge.runtime.executors.base import RunInfo
from flowforge.runtime.ledger import Ledger
from flowforge.runtime.prefect_client import cancelled_before_start, sync_client
from flowforge.runtime.publisher import Publisher
from flowforge.runtime.scope import RunScope
from flowforge.runtime.settings import WorkerSettings
from flowforge.runtime.tasks import item_tasks, job_tasks
from flowforge.runtime.upstream import enrich

_log = logging.getLogger("flowforge.run")


def _cancelled_before_start(flow_run_id: str) -> bool:
    """`prefect_client.cancelled_before_start`, open on failure: the engine has just moved the
    run to Running through the same server, and a run failed for one unanswered read would be
    worse than the rare cancel it would have caught."""
    try:
        return cancelled_before_start(flow_run_id)
    except Exception as exc:
        _log.warning("could not read the run's states (%s); going on", exc)
        return False


def load_spec(module_file: str) -> Workflow:
    """The workflow compiled into a generated module: the JSON file beside it."""
    return Workflow.model_validate_json(Path(module_file).with_suffix(".json").read_text())


class WorkflowRun:
    """A flow run from its start to its final state; the jobs share its `scope`."""

    def __init__(self, scope: RunScope, publisher: Publisher,
                 exits: contextlib.ExitStack) -> None:
        self.scope = scope
        self.publisher = publisher
        self._exits = exits  # the shared Prefect client, closed by finish()

    @classmethod
    def start(cls, spec: Workflow, inputs: dict[str, Any],
              trigger: dict[str, Any] | None = None,
              repair: dict[str, dict[str, Any]] | None = None) -> WorkflowRun:
        ctx = FlowRunContext.get()
        if ctx is None or ctx.flow_run is None:
            raise RuntimeError("WorkflowRun.start() must be called inside a flow run")
        plain_console()  # before the jobs log: rich renders each line even into a pipe
        flow_run_id = str(ctx.flow_run.id)
        # Entered first, in the flow body, so every job's task thread inherits one client
        # instead of building two per task run (see flowforge.runtime.prefect_client).
        exits = contextlib.ExitStack()
        exits.enter_context(SyncClientContext.get_or_create())
        if _cancelled_before_start(flow_run_id):
            with sync_client() as client:
                client.set_flow_run_state(ctx.flow_run.id, Cancelled(
                    message="cancelled before it started"), force=True)
            exits.close()
            raise Abort("the run was cancelled before it started; no job was run")
        settings = WorkerSettings()
        needs = effective_needs(spec)
        masker = Masker()
        ledger = Ledger(spec.name, flow_run_id, topological_order(spec, needs), inputs,
                        enrich(trigger) or {"type": "manual"}, masker)
        executors = RunExecutors(RunInfo(flow_run_id, spec.name, settings,
                                         on_secret=masker.add, namespace=spec.ns))
        scope = RunScope(spec=spec, flow_run_id=flow_run_id, needs=needs, ledger=ledger,
                         masker=masker, executors=executors, settings=settings,
                         reused={k: v for k, v in (repair or {}).items()
                                 if k in {j.name for j in spec.jobs}},
                         item_tasks=item_tasks(spec))
        publisher = Publisher(flow_run_id, ledger.summary)
        ledger.on_change = publisher.mark_dirty
        run = cls(scope, publisher, exits)
        scope.register()
        executors.prepare(job.target_kind for job in spec.jobs if job.runs_on_target)
        publisher.start()
        return run

    async def finish(self, futures: list[PrefectFuture[Any]]) -> State:
        """Wait for every job, then return the run's own final state."""
        try:
            return await self._finish(futures)
        finally:
            self.scope.unregister()
            self._exits.close()

    async def _finish(self, futures: list[PrefectFuture[Any]]) -> State:
        scope, ledger = self.scope, self.scope.ledger
        try:
            # `wait` blocks; run it in a thread so the flow's event loop stays free.
            await asyncio.to_thread(wait, futures)
        except BaseException:
            scope.stop.set()
            ledger.mark_unfinished(JobState.CANCELLED,
                                   "the run was stopped before this job finished")
            scope.executors.kill_all()
            await asyncio.to_thread(scope.executors.close)  # kills the remote jobs too
            await asyncio.to_thread(self.publisher.close, ledger.summary("CANCELLED"))
            raise
        await asyncio.to_thread(scope.executors.close)
        ledger.mark_unfinished(JobState.FAILED, "the job's task ended without reporting a result")
        states = ledger.states()
        failed = [n for n in ledger.order if states[n] == JobState.FAILED
                  and not scope.jobs[n].continue_on_error]
        outputs, output_error = self._outputs()
        state = "FAILED" if failed or output_error else "COMPLETED"
        summary = ledger.summary(state, outputs)
        await asyncio.to_thread(self.publisher.close, summary)
        data = summary.model_dump(mode="json")
        if state == "FAILED":
            message = (f"failed jobs: {', '.join(failed)}" if failed else "") or output_error
            return Failed(message=message, data=data)
        return Completed(message=f"{len(ledger.order)} jobs done", data=data)

    def _outputs(self) -> tuple[Any, str | None]:
        try:
            return templates.render(self.scope.spec.outputs, self.scope.ledger.context()), None
        except templates.TemplateError as exc:
            return None, f"outputs: {exc}"


__all__ = ["WorkflowRun", "job_tasks", "load_spec"]
