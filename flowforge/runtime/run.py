"""One flow run of a workflow: the job task, the run ledger and the final state.

The generated flow submits one Prefect task per job, wired with `wait_for=[allow_failure(f)]`
so the Prefect run graph shows the DAG and a failed upstream does not stop Prefect from starting
the downstream task: deciding whether the job runs is the gate's business, not Prefect's.

Upstream results travel through the in-process `WorkflowRun` ledger rather than task
parameters, because templates may read any ancestor, not only direct upstreams. The ledger is
also what the API reads: the `Publisher` writes it to a `flowforge-run` artifact as jobs finish
and once more at the end, so `GET /runs/{id}` is complete the moment the run is terminal, while
Prefect's own task-run records may trail by tens of seconds (DESIGN §8).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import Task, get_run_logger
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, SyncClientContext, TaskRunContext
from prefect.futures import PrefectFuture, wait
from prefect.logging.loggers import task_run_logger
from prefect.states import Completed, Failed, State

from flowforge import jobkinds
from flowforge.errors import JobError
from flowforge.runtime import gate, processes, templates
from flowforge.runtime.publisher import Publisher, summary_output
from flowforge.runtime.secrets import Masker
from flowforge.settings import Settings
from flowforge.spec import Job, Workflow, effective_needs, topological_order

TERMINAL = {"COMPLETED", "FAILED", "SKIPPED", "UPSTREAM_FAILED", "CANCELLED"}
_RUNS: dict[str, WorkflowRun] = {}
_RUNS_LOCK = threading.Lock()


def load_spec(module_file: str) -> Workflow:
    """The workflow compiled into a generated module: the JSON file beside it."""
    return Workflow.model_validate_json(Path(module_file).with_suffix(".json").read_text())


def _now() -> str:
    return datetime.now(UTC).isoformat()


class WorkflowRun:
    """The ledger of one flow run: every job's state, output and timing, in one place."""

    def __init__(self, spec: Workflow, flow_run_id: str, inputs: dict[str, Any],
                 trigger: dict[str, Any] | None,
                 repair: dict[str, dict[str, Any]] | None = None) -> None:
        self.spec = spec
        self.flow_run_id = flow_run_id
        self.inputs = inputs
        self.trigger = trigger or {"type": "manual"}
        self.needs = effective_needs(spec)
        self.order = topological_order(spec)
        self.jobs = {j.name: j for j in spec.jobs}
        self._lock = threading.Lock()
        self.started_at = _now()
        self.records: dict[str, dict[str, Any]] = {
            name: {"name": name, "state": "PENDING", "started_at": None, "ended_at": None,
                   "output": None, "error": None, "reason": None, "condition": None,
                   "attempts": 0, "reused": False}
            for name in self.order
        }
        # A repair run's reused jobs: the original run's records of jobs that completed.
        self.reused = {k: v for k, v in (repair or {}).items() if k in self.jobs}
        # The job whose failure tripped `settings.fail_fast`, once one has.
        self.fail_fast_by: str | None = None
        self.mappings: dict[str, Any] = {}  # for-each jobs' item state (foreach.Mapping)
        self.publisher = Publisher(flow_run_id, self.summary)
        self.stopping = threading.Event()
        # Secret values loaded by this run's jobs; masked in every output, error and log line.
        self.masker = Masker()
        self._ssh: Any = None  # the run's SshPool, opened by its first ssh job
        self._exits = contextlib.ExitStack()  # the shared Prefect client, closed by finish()
        self.job_root = Settings().job_root  # FLOWFORGE_JOB_ROOT on the worker

    @classmethod
    def start(cls, spec: Workflow, inputs: dict[str, Any],
              trigger: dict[str, Any] | None = None,
              repair: dict[str, dict[str, Any]] | None = None) -> WorkflowRun:
        ctx = FlowRunContext.get()
        if ctx is None or ctx.flow_run is None:
            raise RuntimeError("WorkflowRun.start() must be called inside a flow run")
        from flowforge.runtime.console import plain_console
        from flowforge.runtime.upstream import enrich  # upstream outputs for dependency runs

        plain_console()  # before the jobs log: rich renders each line even into a pipe
        run = cls(spec, str(ctx.flow_run.id), inputs, enrich(trigger), repair)
        # Entered here, in the flow body, so every job's task thread inherits one client
        # instead of building two per task run (see flowforge.runtime.prefect_client).
        run._exits.enter_context(SyncClientContext.get_or_create())
        with _RUNS_LOCK:
            _RUNS[run.flow_run_id] = run
        if any(j.target is not None and j.target.container is not None for j in spec.jobs):
            # A worker killed mid-job leaves its containers behind; the next run cleans up.
            from flowforge.runtime.container import reap_in_background

            reap_in_background(keep=run.flow_run_id)
        if any(j.type == "script" and _runs_locally(j) for j in spec.jobs):
            # Started now, its interpreter loads while Prefect creates the first task runs.
            from flowforge.runtime.launcher import Launcher

            with contextlib.suppress(OSError):  # the first job reports it if it cannot start
                Launcher.get()
        run.publisher.start()
        return run

    @staticmethod
    def current() -> WorkflowRun:
        ctx = TaskRunContext.get()
        if ctx is None:
            raise RuntimeError("no task run context")
        return _RUNS[str(ctx.task_run.flow_run_id)]

    # -- the ledger ---------------------------------------------------------------------------

    def update(self, name: str, **fields: Any) -> dict[str, Any]:
        for key in ("output", "error"):
            if fields.get(key) is not None:
                fields[key] = self.masker.mask(fields[key])
        with self._lock:
            self.records[name].update(fields)
            record = dict(self.records[name])
        self.publisher.mark_dirty()
        return record

    def record(self, name: str) -> dict[str, Any]:
        with self._lock:
            return dict(self.records[name])

    def summary(self, final_state: str | None = None, outputs: Any = None) -> dict[str, Any]:
        with self._lock:
            jobs = [dict(self.records[n]) for n in self.order]
        done = sum(j["state"] in TERMINAL for j in jobs)
        return {
            "version": 1,
            "workflow": self.spec.name,
            "flow_run_id": self.flow_run_id,
            "state": final_state or "RUNNING",
            "started_at": self.started_at,
            "ended_at": _now() if final_state else None,
            "inputs": self.inputs,
            "trigger": self.trigger,
            "outputs": outputs,
            "progress": {"done": done, "total": len(jobs)},
            "jobs": [{**j, "output": summary_output(j["output"])} for j in jobs],
        }

    def shared_input(self, upstream: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """The part of a script's `input.json` that does not depend on params or the item."""
        return {"inputs": self.inputs,
                "jobs": {u: {k: r[k] for k in ("state", "output", "condition")}
                         for u, r in upstream.items()},
                "trigger": self.trigger}

    def context(self, name: str) -> dict[str, Any]:
        """What a job's templates can read."""
        with self._lock:
            jobs = {n: {k: r[k] for k in ("state", "output", "error", "condition")}
                    for n, r in self.records.items() if r["state"] in TERMINAL}
        from flowforge.runtime.foreach import current_item

        return {
            "inputs": self.inputs,
            "jobs": jobs,
            "item": current_item(),
            "trigger": self.trigger,
            "run": {"id": self.flow_run_id, "workflow": self.spec.name,
                    "started_at": self.started_at},
        }

    # -- one job ------------------------------------------------------------------------------

    def execute(self, name: str) -> Any:
        job = self.jobs[name]
        ctx = TaskRunContext.get()
        attempt = ctx.task_run.run_count if ctx else 1
        if name in self.reused:
            return self._reuse(name)
        self.update(name, state="RUNNING", started_at=_now(), ended_at=None, error=None,
                    attempts=attempt)
        upstream = {n.job: self.record(n.job) for n in self.needs[name]}
        if self.fail_fast_by is not None:
            reason = f"fail_fast: job '{self.fail_fast_by}' failed"
            record = self.update(name, state="SKIPPED", reason=reason, ended_at=_now())
            return Completed(name="Skipped", message=reason, data=record)
        decision = gate.decide(
            job.run_if,
            [gate.Edge(n.job, n.on) for n in self.needs[name]],
            {u: gate.Upstream(u, r["state"] if r["state"] in TERMINAL else "FAILED",
                              r["condition"]) for u, r in upstream.items()},
        )
        if not decision.run:
            record = self.update(name, state=decision.state, reason=decision.reason,
                                 ended_at=_now())
            state_name = "Skipped" if decision.state == gate.SKIPPED else "UpstreamFailed"
            get_run_logger().info("not run (%s): %s", decision.state, decision.reason)
            return Completed(name=state_name, message=decision.reason, data=record)
        try:
            output, condition = self._run_controlled(job, upstream, attempt)
        except Exception as exc:  # a bug or an unexpected third-party error: still a job failure
            error = exc.message if isinstance(exc, JobError) else f"{type(exc).__name__}: {exc}"
            self._failed(name, error)
            if ctx is None or attempt > ctx.task.retries:  # Prefect will not try again
                self._trip_fail_fast(name)
            masked = self.masker.mask(error)
            if masked != error:  # Prefect logs and stores the exception: it must not hold a secret
                raise JobError(masked) from None
            raise
        return self.update(name, state="COMPLETED", output=output, condition=condition,
                           ended_at=_now())

    def _failed(self, name: str, error: str) -> None:
        # A job killed because the run is being stopped was cancelled, not failed: its
        # process dies of the stop's own SIGTERM, which must not read as the job's fault.
        if self.stopping.is_set():
            reason = (f"fail_fast: job '{self.fail_fast_by}' failed" if self.fail_fast_by
                      else "the run was stopped while this job ran")
            self.update(name, state="CANCELLED", error=error, ended_at=_now(), reason=reason)
        else:
            self.update(name, state="FAILED", error=error, ended_at=_now())

    def _trip_fail_fast(self, name: str) -> None:
        """`settings.fail_fast`: the first failure cancels running jobs and skips the rest."""
        if not self.spec.settings.fail_fast or self.jobs[name].continue_on_error:
            return
        with self._lock:
            if self.fail_fast_by is not None:
                return
            self.fail_fast_by = name
        self.stopping.set()  # sub-workflows, polls and for-each items watch it
        # Killing waits out a grace period; the failing task should not wait with it.
        threading.Thread(target=processes.kill_all, name="flowforge-fail-fast",
                         daemon=True).start()

    def _reuse(self, name: str) -> State:
        """A repair run's completed job: its original record, marked reused, not run again."""
        original = self.reused[name]
        from flowforge.repair import REUSED_FIELDS

        record = self.update(name, **{k: original.get(k) for k in REUSED_FIELDS}, reused=True)
        get_run_logger().info("reused from the repaired run (not run again)")
        return Completed(name="Reused", message="reused from the repaired run", data=record)

    def _run_controlled(self, job: Job, upstream: dict[str, dict[str, Any]],
                        attempt: int) -> tuple[Any, bool | None]:
        """Run a job once, per item (`for_each`) or until its `until` holds."""
        if job.for_each is not None:
            from flowforge.runtime import foreach

            return foreach.run(self, job, upstream, item_task(job)), None
        from flowforge.runtime import limits

        with limits.hold(job.concurrency):
            if job.until is not None:
                from flowforge.runtime import loops

                return loops.poll(self, job, upstream, attempt)
            return self.run_once(job, upstream, attempt)

    def run_once(self, job: Job, upstream: dict[str, dict[str, Any]],
                 attempt: int) -> tuple[Any, bool | None]:
        return self._run_job(job, upstream, attempt)

    def _run_job(self, job: Job, upstream: dict[str, dict[str, Any]],
                 attempt: int) -> tuple[Any, bool | None]:
        context = self.context(job.name)
        secret_names = jobkinds.job_secret_names(job)
        if secret_names:
            from flowforge.runtime.secrets import load_secrets

            context["secrets"] = load_secrets(secret_names)
            self.masker.add(context["secrets"].values())
        try:
            env = {k: templates.to_env_value(v)
                   for k, v in templates.render(job.env, context).items()}
            params = templates.render(job.params, context)
        except templates.TemplateError as exc:
            raise JobError(f"job '{job.name}': {exc}") from exc
        if job.type == "condition":
            from flowforge.runtime import condition

            return condition.evaluate(job, context)
        if job.type != "script":
            from flowforge.runtime.kinds import run_kind

            logger = get_run_logger()
            return run_kind(self, job, context, attempt,
                            lambda line: logger.info("%s", self.masker.mask(line))), None
        return self._run_script(job, env, params, upstream, attempt)

    def _run_script(self, job: Job, env: dict[str, str], params: Any,
                    upstream: dict[str, dict[str, Any]], attempt: int) -> tuple[Any, bool | None]:
        from flowforge.runtime.local import ScriptJob

        # The logger is made on the first line (most for-each items print nothing), maybe in an
        # executor's reader thread, which has no run context: so the contexts are taken here.
        task_ctx, flow_ctx = TaskRunContext.get(), FlowRunContext.get()
        loggers: list[Any] = [] if task_ctx is not None else [get_run_logger()]

        def log(stream: str, line: str) -> None:
            if not loggers:
                assert task_ctx is not None
                loggers.append(task_run_logger(
                    task_run=task_ctx.task_run, task=task_ctx.task,
                    flow_run=flow_ctx.flow_run if flow_ctx else None,
                    flow=flow_ctx.flow if flow_ctx else None))
            line = self.masker.mask(line)
            if stream == "stderr":
                loggers[0].warning("%s", line)
            else:
                loggers[0].info("%s", line)

        assert job.runtime is not None and job.script is not None  # guaranteed by the spec
        from flowforge.runtime import foreach

        # A for-each item's shared part of input.json comes encoded once for all its items.
        shared = (self.mappings[job.name].shared_input if foreach.in_item()
                  else self.shared_input(upstream))
        result = self._executor(job).run(
            ScriptJob(
                name=job.name,
                runtime=job.runtime,
                script=job.script,
                env=env,
                input={
                    "inputs": shared["inputs"],
                    "params": params,
                    "jobs": shared["jobs"],
                    "item": _item(),
                    "trigger": shared["trigger"],
                },
                event={"workflow": self.spec.name, "job": job.name, "run_id": self.flow_run_id,
                       "trigger": self.trigger, "attempt": attempt, "item": _item()},
                variables=_read_variables() if _uses_variables(job.script) else {},
                timeout=job.timeout,
                work_root=self.job_root,
            ),
            log,
        )
        if result.progress:
            self.update(job.name, progress=result.progress)
        if result.variables_set:
            _write_variables(result.variables_set)
        if result.error is not None:
            if job.target is not None and job.target.ssh is not None:
                self.update(job.name, output=result.output)  # which servers failed, and how
            raise JobError(result.error)
        return result.output, result.condition

    def _executor(self, job: Job) -> Any:
        """A `LauncherExecutor` (the local executor in the launcher process), a
        `ContainerExecutor`, or an `SshExecutor` on the run's one SSH pool (one connection per
        server, shared by every job of the run)."""
        if _runs_locally(job):
            from flowforge.runtime.launcher import LauncherExecutor

            return LauncherExecutor()
        assert job.target is not None
        if job.target.container is not None:
            from flowforge.runtime.container import ContainerExecutor

            return ContainerExecutor(job.target.container)
        assert job.target.ssh is not None  # neither local nor a container
        from flowforge.runtime.ssh import SshExecutor, SshPool
        from flowforge.runtime.ssh_servers import PrefectDirectory

        with self._lock:
            if self._ssh is None:
                self._ssh = SshPool(PrefectDirectory(), on_secret=self.masker.add)
        return SshExecutor(self._ssh, job.target.ssh)

    def _close_ssh(self) -> None:
        if self._ssh is not None:
            self._ssh.close()

    # -- the end ------------------------------------------------------------------------------

    async def finish(self, futures: list[PrefectFuture[Any]]) -> State:
        """Wait for every job, then return the run's own final state (DESIGN §5)."""
        try:
            return await self._finish(futures)
        finally:
            with _RUNS_LOCK:
                _RUNS.pop(self.flow_run_id, None)
            self._exits.close()

    async def _finish(self, futures: list[PrefectFuture[Any]]) -> State:
        try:
            # `wait` blocks; run it in a thread so the flow's event loop stays free.
            await asyncio.to_thread(wait, futures)
        except BaseException:
            self.stopping.set()
            self._mark_unfinished("CANCELLED", "the run was stopped before this job finished")
            processes.kill_all()
            await asyncio.to_thread(self._close_ssh)  # kills the remote jobs too
            await asyncio.to_thread(self.publisher.close, self.summary("CANCELLED"))
            raise
        await asyncio.to_thread(self._close_ssh)
        self._mark_unfinished("FAILED", "the job's task ended without reporting a result")
        failed = [n for n in self.order if self.records[n]["state"] == "FAILED"
                  and not self.jobs[n].continue_on_error]
        outputs, output_error = self._outputs()
        state = "FAILED" if failed or output_error else "COMPLETED"
        summary = self.summary(state, outputs)
        await asyncio.to_thread(self.publisher.close, summary)
        if state == "FAILED":
            message = (f"failed jobs: {', '.join(failed)}" if failed else "") or output_error
            return Failed(message=message, data=summary)
        return Completed(message=f"{len(self.order)} jobs done", data=summary)

    def _mark_unfinished(self, state: str, reason: str) -> None:
        with self._lock:
            for record in self.records.values():
                if record["state"] not in TERMINAL:
                    record.update(state=state, reason=reason, ended_at=_now())

    def _outputs(self) -> tuple[Any, str | None]:
        context = self.context("")
        try:
            return templates.render(self.spec.outputs, context), None
        except templates.TemplateError as exc:
            return None, f"outputs: {exc}"


def _runs_locally(job: Job) -> bool:
    """Whether a script job runs on the worker itself (neither a container nor ssh target)."""
    return job.target is None or (job.target.container is None and job.target.ssh is None)


def _item() -> Any:
    from flowforge.runtime.foreach import current_item

    return current_item()


def _uses_variables(script: str) -> bool:
    # Reading every Prefect variable costs an API call; only scripts that read them pay it.
    return any(word in script for word in ("get_variable", "getVariable"))


def _read_variables() -> dict[str, Any]:
    from flowforge.runtime import variables

    return variables.read_all()


def _write_variables(changes: dict[str, Any]) -> None:
    """Apply a job's `set_variable` calls as Prefect variables (last writer wins per key)."""
    from flowforge.runtime import variables

    variables.write(changes)


def _run_job(job: str) -> Any:
    return WorkflowRun.current().execute(job)


def _retry_options(job: Job) -> dict[str, Any]:
    """The job's retries as Prefect task options (`backoff: exponential` -> Prefect's own
    `exponential_backoff`, `jitter` -> `retry_jitter_factor`)."""
    if job.type == "http":  # an http job retries inside its executor, only on 5xx / connection
        return {"retries": 0}
    delay: Any = job.retry_delay
    if job.backoff == "exponential":
        from prefect.tasks import exponential_backoff

        delay = exponential_backoff(backoff_factor=job.retry_delay or 1.0)(job.retries)
    return {"retries": job.retries, "retry_delay_seconds": delay,
            "retry_jitter_factor": job.jitter}


def job_tasks(spec: Workflow) -> dict[str, Task[..., Any]]:
    """One Prefect task per job, named after it, with the job's retry options.

    Side-effecting jobs must never be served from Prefect's cache, hence NO_CACHE; results
    live in the ledger, so nothing needs persisting either. A for-each job's retries belong to
    its items (see `item_task`), as they do with Prefect's map.
    """
    base: Task[[str], Any] = Task(fn=_run_job, cache_policy=NO_CACHE, persist_result=False)
    return {
        job.name: base.with_options(
            name=job.name,
            task_run_name=job.name,
            **(_retry_options(job) if job.for_each is None else {"retries": 0}),
        )
        for job in spec.jobs
    }


def item_task(job: Job) -> Task[..., Any]:
    """The task one item of a for-each job runs as; its runs are named `job[index]`."""
    from flowforge.runtime.foreach import run_item

    base: Task[..., Any] = Task(fn=run_item, cache_policy=NO_CACHE, persist_result=False)
    return base.with_options(name=job.name, task_run_name=job.name + "[{index}]",
                             **_retry_options(job))


__all__ = ["WorkflowRun", "job_tasks", "load_spec"]
