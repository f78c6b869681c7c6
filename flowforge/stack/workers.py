"""The process worker(s) `flowforge up` serves its work pool with, and the pools themselves."""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import WorkerStatus

from flowforge.controlplane import pools
from flowforge.controlplane.client import PrefectTarget, prefect_client, prefect_settings
from flowforge.stack.children import Child, SupervisorError, base_env, run_markers
from flowforge.stack.settings import StackSettings

WORKER_ONLINE_TIMEOUT = 30.0


def ensure_work_pool(api_url: str, name: str, pool_type: str = "process",
                     defaults: dict[str, Any] | None = None, auth: str | None = None) -> bool:
    """Create work pool `name` unless it exists (see `controlplane.pools.ensure_work_pool`)."""
    created: bool = with_prefect(api_url, name, lambda client: pools.ensure_work_pool(
        client, name, pool_type, defaults), auth)
    return created


def with_prefect(api_url: str, pool: str, call: Callable[[Any], Any],
                 auth: str | None = None) -> Any:
    """`await call(client)` with a Prefect client of the server at `api_url`, from sync code."""

    async def go() -> Any:
        target = PrefectTarget(api_url=api_url, project_dir=Path("."), work_pool=pool,
                               auth_string=auth)
        async with prefect_client(target) as client:
            return await call(client)

    return asyncio.run(go())


def worker_env(settings: StackSettings, api_url: str, prefect_home: Path | None,
               auth: str | None = None) -> dict[str, str]:
    env = base_env()
    env["PREFECT_API_URL"] = api_url
    if auth:  # Prefect's worker hands its settings on to the flow runs it starts
        env["PREFECT_API_AUTH_STRING"] = auth
    env["PREFECT_WORKER_QUERY_SECONDS"] = str(settings.worker_query_seconds)
    # A run cancelled while Pending (its process starting) goes Cancelling; the engine then
    # refuses to start it, and only the worker's pending-run cancellation (off by default;
    # driven by events, the poll a fallback) moves it on to Cancelled.
    # `runtime.run.WorkflowRun.start` closes the race that leaves open.
    env["PREFECT_WORKER_ENABLE_CANCELLATION"] = "true"
    env["PREFECT_WORKER_CANCELLATION_POLL_SECONDS"] = "10"
    # Flow runs inherit it: their heartbeats are what the crash-detection automation watches.
    env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(settings.heartbeat_seconds)
    if prefect_home is not None:
        env["PREFECT_HOME"] = str(prefect_home)
    # The warm runner's marks of the flow-run processes it forked (stack.keeper reads them).
    env["FLOWFORGE_RUN_MARKERS"] = str(run_markers(settings.home))
    return env


def worker_argv(pool: str, pool_type: str = "process", name: str | None = None,
                limit: int | None = None, runner: str = "process") -> list[str]:
    """Prefect's worker of `pool_type`, or for a process pool and `runner="warm"` FlowForge's
    warm runner (`flowforge.stack.runner`), which is a process worker to Prefect."""
    if pool_type == "process" and runner == "warm":
        argv = [sys.executable, "-m", "flowforge.stack.runner", "--pool", pool]
    else:
        argv = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool,
                "--type", pool_type]
    if limit:
        argv += ["--limit", str(limit)]
    return [*argv, "--name", name] if name else argv


def start_worker(settings: StackSettings, api_url: str, prefect_home: Path | None = None,
                 pool_type: str = "process", auth: str | None = None,
                 name: str | None = None) -> Child:
    """Start `prefect worker start --pool <pool> --type <pool_type>` in settings.project.

    The pool is `work_pool` for process workers, `docker_work_pool` for the docker worker.
    `prefect_home` is None when using an external Prefect server (keep the user's profile).
    `name` (default `worker`, `docker-worker`) names the child and its log.
    """
    settings.project.mkdir(parents=True, exist_ok=True)
    pool, default = ((settings.work_pool, "worker") if pool_type == "process"
                     else (settings.docker_work_pool, f"{pool_type}-worker"))
    name = name or default
    child = Child(
        name=name,
        argv=worker_argv(pool, pool_type, limit=settings.worker_limit, runner=settings.runner),
        env=worker_env(settings, api_url, prefect_home, auth),
        log_path=settings.home / "logs" / f"{name}.log",
        cwd=settings.project,
        # Jobs' files are read by another user (the job user, a container's): not 077.
        umask=0o022,
    )
    child.start()
    return child


def wait_worker_online(api_url: str, pool: str, timeout: float = WORKER_ONLINE_TIMEOUT,
                       check: Callable[[], None] | None = None, auth: str | None = None,
                       count: int = 1) -> float:
    """Wait until the pool has `count` ONLINE workers; return the seconds it took."""
    async def online() -> bool:
        async with get_client() as client:
            workers = await client.read_workers_for_work_pool(pool)
            return sum(w.status == WorkerStatus.ONLINE for w in workers) >= count

    start = time.monotonic()
    with prefect_settings(api_url, auth):
        while True:
            if check is not None:
                check()
            with contextlib.suppress(Exception):
                if asyncio.run(online()):
                    return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise SupervisorError(f"no worker came online in pool {pool!r} within {timeout:.0f}s")
            time.sleep(0.25)


__all__ = ["WORKER_ONLINE_TIMEOUT", "ensure_work_pool", "start_worker", "wait_worker_online",
           "with_prefect", "worker_argv", "worker_env"]
