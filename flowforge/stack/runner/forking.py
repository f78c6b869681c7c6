"""The warm runner's fork server and the starter that hands it a flow run.

Python's `multiprocessing` "forkserver" start method is the fork server this needs: a process
spawned fresh (so none of the worker's threads or sockets), which imports the preload list
once and then forks one child per request from its single thread. The child runs
`flowforge.runtime.warmstart.run_flow_run`; it is the fork server's child, so the worker waits
on its sentinel (the exit code comes through it) rather than `waitpid`.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import multiprocessing.context
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
import anyio.abc
from prefect.runner._process_manager import ProcessHandle, create_isolated_termination_scope
from prefect.settings import get_current_settings
from prefect.utilities.processutils import sanitize_subprocess_env

from flowforge.runtime.warmstart import run_flow_run

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun
    from prefect.runner._control_channel import ControlChannel

#: What the fork server imports before its first fork: Prefect's engine and client and the
#: FlowForge runtime, through the module whose function every child runs.
PRELOAD = ["flowforge.runtime.warmstart"]
#: How long a new child may take to become its own session leader before the starter gives up
#: waiting and hands its handle on (the kill then reaches the child alone).
SESSION_WAIT_SECONDS = 2.0


def fork_context() -> multiprocessing.context.ForkServerContext:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def warm_up(ctx: multiprocessing.context.ForkServerContext) -> None:
    """Start the fork server and wait until it has imported everything (a no-op child)."""
    child = ctx.Process(target=os.getpid, name="flowforge-warm-up")
    child.start()
    child.join()


def run_environment(flow_run: FlowRun, configured: Mapping[str, str | None],
                    control_env: Mapping[str, str]) -> dict[str, str]:
    """The environment Prefect's process worker gives a flow run's engine process.

    As prefect/runner/_starter_engine.py builds it for the workspace supervisor: this
    process's environment, its Prefect settings, then the work pool's `env` over them, then
    the run's own variables. Cancellation hooks are the worker's to run, not the engine's.
    """
    env: dict[str, str | None] = dict(os.environ)
    env.update(get_current_settings().to_environment_variables(exclude_unset=True))
    env.update(configured)
    env.update({
        "PREFECT__FLOW_RUN_ID": str(flow_run.id),
        "PREFECT__ENABLE_CANCELLATION_AND_CRASHED_HOOKS": "false",
        **control_env,
    })
    return sanitize_subprocess_env(env)


class ForkStarter:
    """Prefect's `ProcessStarter` protocol (prefect/runner/_flow_run_executor.py), by fork.

    `start` signals a `ProcessHandle` whose termination scope is the child's process group,
    as Prefect's own starter does for its supervisor, then blocks until the child exits.
    """

    def __init__(self, *, ctx: multiprocessing.context.ForkServerContext, cwd: Path,
                 env: Mapping[str, str | None], control_channel: ControlChannel | None,
                 markers: Path | None = None) -> None:
        self._ctx = ctx
        self._cwd = cwd
        self._env = env
        self._control_channel = control_channel
        self._markers = markers

    async def start(
        self,
        flow_run: FlowRun,
        task_status: anyio.abc.TaskStatus[ProcessHandle] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        control_env: dict[str, str] = {}
        registered = False
        if self._control_channel is not None:
            try:
                port, token = self._control_channel.register(flow_run.id)
            except RuntimeError:  # no loopback listener: kill-only cancellation, as Prefect
                pass
            else:
                control_env = {"PREFECT__CONTROL_PORT": str(port),
                               "PREFECT__CONTROL_TOKEN": token}
                registered = True
        env = run_environment(flow_run, self._env, control_env)
        child: Any = self._ctx.Process(
            target=run_flow_run, args=(str(flow_run.id), env, str(self._cwd)),
            # Daemonic: were the worker to exit with a run still alive (Prefect's process
            # manager kills them first), multiprocessing terminates it instead of waiting.
            name=f"flow-run-{flow_run.id}", daemon=True)
        try:
            # One request to the fork server, answered with the child's pid: milliseconds,
            # but a blocking read, so off the worker's event loop.
            await anyio.to_thread.run_sync(child.start)
        except BaseException:
            if registered and self._control_channel is not None:
                self._control_channel.unregister(flow_run.id)
            raise
        marker = _mark(self._markers, child.pid, str(flow_run.id))
        try:
            await _until_session_leader(child.pid)
            task_status.started(ProcessHandle(
                child, termination_scope=create_isolated_termination_scope(child.pid)))
            await _until_exit(child)
        finally:
            if marker is not None:
                marker.unlink(missing_ok=True)


def _mark(markers: Path | None, pid: int, flow_run_id: str) -> Path | None:
    """`markers/<pid>` holding the run id: the child's /proc environ is the fork server's, so
    this is how a supervisor tells which run an orphaned child was (`stack/orphans.py`)."""
    if markers is None:
        return None
    markers.mkdir(parents=True, exist_ok=True)
    marker = markers / str(pid)
    partial = markers / f".{pid}.tmp"
    partial.write_text(flow_run_id)
    partial.replace(marker)
    return marker


async def _until_session_leader(pid: int) -> None:
    """Wait (briefly) until the child has called setsid, so a kill reaches its group."""
    deadline = anyio.current_time() + SESSION_WAIT_SECONDS
    while anyio.current_time() < deadline:
        try:
            if os.getpgid(pid) == pid:
                return
        except ProcessLookupError:
            return  # gone already: its exit code tells the rest
        await anyio.sleep(0.002)


async def _until_exit(child: Any) -> None:
    """Wait for the child's sentinel without a thread per run (a run may last days)."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    sentinel: int = child.sentinel

    def ready() -> None:
        if not done.done():
            done.set_result(None)

    loop.add_reader(sentinel, ready)
    try:
        await done
    finally:
        loop.remove_reader(sentinel)
    child.join()  # reads the exit code the fork server wrote; returns at once


__all__ = ["PRELOAD", "ForkStarter", "fork_context", "run_environment", "warm_up"]
