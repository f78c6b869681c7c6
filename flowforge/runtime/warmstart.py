"""What a flow run does in a child of the warm runner's fork server (`flowforge.stack.runner`).

The fork server imports this module once, before it forks anything: Prefect's engine, its
client and `flowforge.runtime` (everything a generated flow imports) are then already in
memory in every child, which is most of the two interpreters Prefect's process worker starts
per run (`docs/architecture.md`, Warm runner). Importing starts no thread: a thread in the
fork server would be copied into every child as a dead one, holding whatever lock it held.

`run_flow_run` is the body of `python -m prefect.engine` (prefect/engine.py) for one flow run,
after making the child what a fresh engine process would be: its own session (so cancelling
kills the run's process group, launcher and jobs included), the run's own environment and
working directory, and Prefect's settings read again from that environment.
"""

from __future__ import annotations

import atexit
import importlib
import os
import pkgutil
import ssl
import sys
import threading
import warnings
from collections.abc import Mapping
from typing import Any
from uuid import UUID

import prefect.engine
import prefect.flow_engine
from prefect._internal.control_listener import configure_from_env
from prefect.context import refresh_global_settings_context

import flowforge.runtime

#: What a flow run imports lazily, found by diffing `sys.modules` before and after a run:
#: loaded here once rather than in every child (graphviz alone took 0.13 s a run).
PREFECT_LAZY = (
    "anyio._backends._asyncio", "encodings.idna", "stringprep", "pydantic.v1",
    "packaging.requirements", "packaging.tags", "rich._emoji_codes",
    "prefect._internal.observers", "prefect._internal.states",
    "prefect._internal.infrastructure_exit_codes", "prefect.bundles",
    "prefect.concurrency.asyncio", "prefect.concurrency.sync", "prefect.concurrency.services",
    "prefect.deployments.steps.core", "prefect.deployments.steps.pull",
    "prefect.deployments.steps.utility", "prefect.runner", "prefect.task_engine",
    "prefect.utilities.visualization",
)


def _preload() -> None:
    """Import Prefect's lazy modules and every module of `flowforge.runtime` (job kinds and
    executors a run may use: Docker's and SSH's clients included)."""
    for name in PREFECT_LAZY:
        importlib.import_module(name)
    for module in pkgutil.walk_packages(flowforge.runtime.__path__, "flowforge.runtime."):
        if not module.name.endswith(("__main__", "launcher_main")):
            importlib.import_module(module.name)
    if threading.active_count() > 1:  # a child would inherit a copy of it, without its thread
        warnings.warn(f"warm preload started threads: {threading.enumerate()}", stacklevel=1)


#: TLS contexts built before the fork, one per client a run makes (five measured). Prefect's
#: client builds one per client with `ssl.create_default_context(cafile=...)` (certifi's or
#: PREFECT_API_SSL_CERT_FILE) whatever the API URL's scheme, and loading the bundle is 44 ms
#: of CPU each: 0.22 s of a warm start. A child takes an untouched one per call with exactly
#: those arguments, so no two clients share a context and a caller may still change its own.
TLS_CONTEXTS = 8
_create_default_context = ssl.create_default_context
_tls_pool: list[ssl.SSLContext] = []
_tls_cafile: str | None = None


def _prebuild_tls() -> None:
    global _tls_cafile
    import certifi
    from prefect.settings import get_current_settings

    # The file Prefect's client will ask for (prefect/client/orchestration/__init__.py).
    _tls_cafile = get_current_settings().api.ssl_cert_file or certifi.where()
    _tls_pool.extend(_create_default_context(cafile=_tls_cafile) for _ in range(TLS_CONTEXTS))


def _default_context(purpose: ssl.Purpose = ssl.Purpose.SERVER_AUTH, *,
                     cafile: str | None = None, capath: str | None = None,
                     cadata: str | bytes | None = None) -> ssl.SSLContext:
    if (_tls_pool and purpose == ssl.Purpose.SERVER_AUTH and cafile == _tls_cafile
            and capath is None and cadata is None):
        return _tls_pool.pop()
    return _create_default_context(purpose, cafile=cafile, capath=capath, cadata=cadata)


_preload()
_prebuild_tls()


def become_run_process(env: dict[str, str], cwd: str) -> None:
    """Own session, the run's environment (nothing of the fork server's), its directory."""
    os.setsid()
    stale = _prefect_settings(os.environ) != _prefect_settings(env)
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    ssl.create_default_context = _default_context  # type: ignore[assignment]
    if stale:
        # Prefect read its settings when the fork server imported it, from the server's
        # environment; where the run's differ (the pool's env), the run's must win. Reading
        # them again is 40 ms, so only then.
        refresh_global_settings_context()


def _prefect_settings(env: Mapping[str, str]) -> dict[str, str]:
    """Prefect's settings in `env` (`PREFECT__*` are per-run variables, not settings)."""
    return {k: v for k, v in env.items()
            if k.startswith("PREFECT_") and not k.startswith("PREFECT__")}


def run_flow_run(flow_run_id: str, env: dict[str, str], cwd: str) -> None:
    """Run one flow run to its end in this (forked) process; exits with the engine's code."""
    become_run_process(env, cwd)
    try:
        _engine_main(UUID(flow_run_id))
    finally:
        # multiprocessing ends its children with os._exit: flush Prefect's log and event
        # workers (registered with atexit) as a normal interpreter exit would.
        atexit._run_exitfuncs()
        sys.stdout.flush()
        sys.stderr.flush()


def _engine_main(flow_run_id: UUID) -> None:
    # Mirrors the `__main__` block of prefect/engine.py: the control channel from the
    # environment first, then load the run and its flow (the deployment's pull step, the
    # generated module read from disk: a changed workflow runs its new code), then run it.
    configure_from_env()
    with prefect.engine.handle_engine_signals(flow_run_id):
        from prefect._internal.metrics import RunMetrics

        flow_run = prefect.flow_engine.load_flow_run(flow_run_id=flow_run_id)
        run_logger = prefect.flow_engine.flow_run_logger(flow_run=flow_run)
        try:
            flow: Any = _load_flow(flow_run)
        except Exception:
            run_logger.error("Unexpected exception encountered when trying to load flow",
                             exc_info=True)
            raise
        with RunMetrics(flow_run, flow):
            # A logger adapter where a logger is annotated, as prefect/engine.py passes it.
            result: object = prefect.flow_engine.run_flow(
                flow, flow_run=flow_run, error_logger=run_logger)  # type: ignore[arg-type]
            prefect.engine._drive_run_flow_result(flow, result)


def _load_flow(flow_run: Any) -> Any:
    """The deployment's flow: what `prefect.flow_engine.load_flow` does, shorter for
    FlowForge's own deployments, whose one pull step is `set_working_directory` and whose
    entrypoint is a file in that directory (`controlplane/deploy.py`): change to it and load
    the file, without Prefect's step runner (it read the deployment again and logged four
    lines to the API, 0.25 s a run). Any other deployment goes Prefect's way."""
    from prefect.client.orchestration import get_client
    from prefect.flows import load_flow_from_entrypoint

    if flow_run.deployment_id is None or os.environ.get("PREFECT__FLOW_ENTRYPOINT"):
        return prefect.flow_engine.load_flow(flow_run)
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment(flow_run.deployment_id)
    directory = _working_directory(deployment.pull_steps)
    if directory is None or not deployment.entrypoint or ":" not in deployment.entrypoint:
        return prefect.flow_engine.load_flow(flow_run)
    os.chdir(directory)
    return load_flow_from_entrypoint(deployment.entrypoint, use_placeholder_flow=False)


def _working_directory(steps: list[dict[str, Any]] | None) -> str | None:
    if not steps or len(steps) != 1:
        return None
    step = steps[0].get("prefect.deployments.steps.set_working_directory")
    directory = step.get("directory") if isinstance(step, dict) else None
    return directory if isinstance(directory, str) and "{{" not in directory else None


__all__ = ["PREFECT_LAZY", "become_run_process", "run_flow_run"]
