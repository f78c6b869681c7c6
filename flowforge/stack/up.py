"""`flowforge up`: the Prefect server, the worker(s) and the API as children, each restarted if
it dies (`stack.keeper`); Ctrl-C stops all.

Plain, blocking functions (this runs in the CLI process).

Layout under `home` (private: files 0600, directories 0700, but for the project):
    admin.key                                                the first admin API key
    prefect-auth                                             the Prefect server's credential
    logs/prefect-server.log, logs/worker.log, logs/api.log   child output (appended)
    run/pids.json                                            supervisor and child PIDs + state
    prefect/                                                 PREFECT_HOME, prefect.db
    project/                                                 the worker's cwd (settings.project)
"""

from __future__ import annotations

import contextlib
import functools
import os
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from flowforge.controlplane import runs
from flowforge.controlplane.client import prefect_settings
from flowforge.controlplane.settings import ADMIN_KEY_FILE, PREFECT_AUTH_FILE
from flowforge.runtime.executors import reap_all
from flowforge.runtime.prefect_client import run_finished
from flowforge.stack.api_process import API_HEALTH_TIMEOUT, DEFAULT_API_APP, start_api
from flowforge.stack.children import (
    STOP_TIMEOUT,
    Child,
    PidFile,
    Signals,
    StopRequested,
    SupervisorError,
    check_port_free,
    handle_signals,
    local_host,
    wait_http_ok,
)
from flowforge.stack.docker_pool import (
    check_runner_image,
    docker_pool_defaults,
    warn_unhardened_pool,
)
from flowforge.stack.home import prefect_auth, secure_home
from flowforge.stack.keeper import Keeper
from flowforge.stack.orphans import become_subreaper, stop_adopted
from flowforge.stack.prefect_server import start_prefect_server
from flowforge.stack.settings import StackSettings
from flowforge.stack.topology import Topology, numbered
from flowforge.stack.workers import ensure_work_pool, start_worker, wait_worker_online, with_prefect


def _e(value: object) -> str:
    """Text for rich markup (paths and log tails may contain brackets)."""
    return escape(str(value))


def external_prefect_url(settings: StackSettings) -> str | None:
    """The Prefect API to use instead of starting one: FLOWFORGE_PREFECT_API_URL or PREFECT_API_URL."""
    return settings.prefect_api_url or os.environ.get("PREFECT_API_URL") or None


def reap_leftovers(api_url: str, console: Console, quiet: bool = False,
                   auth: str | None = None) -> None:
    """Remove what jobs of runs that are over left behind (a worker killed mid-job), through
    every target's executor. `quiet`: say nothing of a kind that cannot be reached (a
    process-only set-up has no Docker engine)."""
    with prefect_settings(api_url, auth):
        for reaped in reap_all(run_finished, scope=api_url):
            if reaped.error is not None and not quiet:
                console.print(f"Reaping {reaped.kind} leftovers skipped: {_e(reaped.error)}")
            elif reaped.removed:
                console.print(f"Removed {len(reaped.removed)} leftover {reaped.kind} job(s): "
                              f"{_e(', '.join(reaped.removed))}")


def _start_prefect(settings: StackSettings, shape: Topology, console: Console, signals: Signals,
                   started: Callable[[Child], None], auth: str) -> None:
    """One server with its services, or API servers without them plus one services process.

    The first server is started and healthy before the others: each runs the database
    migrations on start, and two at once on a fresh database would race."""
    role = "api" if shape.split_services else "all"
    for i, port in enumerate(shape.prefect_ports):
        name = numbered("prefect-server", i)
        console.print(f"Starting Prefect {'API ' if shape.split_services else ''}server on "
                      f"127.0.0.1:{port} (log: {_e(settings.home / 'logs' / name)}.log) ...")
        t = time.monotonic()
        # start_prefect_server stops its own child on failure; register it as soon as it is up
        start_prefect_server(settings, check=signals.check, on_started=started, auth=auth,
                             port=port, role=role, name=name)
        console.print(f"  Prefect server healthy in {time.monotonic() - t:.1f}s")
    if shape.split_services:
        start_prefect_server(settings, on_started=started, auth=auth, role="services",
                             name="prefect-services")
        console.print("Started Prefect's services (scheduler, automations, ...) in a process "
                      "of their own")


def run_up(settings: StackSettings, *, api_app: str = DEFAULT_API_APP, console: Console | None = None,
           err_console: Console | None = None, docker: bool = False) -> int:
    """Start everything, keep it up (restarting a child that dies) until SIGINT/SIGTERM/SIGHUP,
    then stop all children.

    Returns the exit code: 0 after a requested stop, 1 when start-up failed or a child had died
    too often to be restarted.
    Progress and URLs go to `console` (stdout), failures to `err_console` (stderr).
    """
    console = console or Console(soft_wrap=True, highlight=False)
    err_console = err_console or Console(stderr=True, soft_wrap=True, highlight=False)
    signals = Signals()
    pids = PidFile(settings.home)
    children: list[Child] = []
    code = 1
    with handle_signals(signals):
        try:
            code = _start_and_block(settings, api_app, console, signals, pids, children, docker)
        except StopRequested:
            console.print(f"[yellow]{signals.name} received during start-up; stopping.[/]")
            code = 0
        except SupervisorError as exc:
            err_console.print(f"[red bold]flowforge up failed:[/] {escape(str(exc))}")
            code = 1
        finally:
            if children:
                pids.state = "stopping"
                pids.write()
                console.print("Stopping " + ", ".join(c.name for c in reversed(children)) + " ...")
            for child in reversed(children):
                child.stop(STOP_TIMEOUT, force=signals.forced)
            stop_adopted(())  # what the children left behind (flow runs, launchers, jobs)
            if pids.owned:  # never touch the file of another running supervisor
                pids.state, pids.exit_code = "stopped", code
                with contextlib.suppress(OSError):
                    pids.write()
    return code


def _start_and_block(settings: StackSettings, api_app: str, console: Console, signals: Signals,
                     pids: PidFile, children: list[Child], docker: bool = False) -> int:
    t0 = time.monotonic()
    external = external_prefect_url(settings)
    shape = Topology.of(settings, external is not None)
    api_local = f"http://{local_host(settings.api_host)}:{settings.api_port}"

    # Fail fast before starting anything.
    for port in shape.api_ports:
        check_port_free(settings.api_host, port, "FlowForge API", "--api-port",
                        "FLOWFORGE_API_PORT")
    for port in shape.prefect_ports:
        check_port_free("127.0.0.1", port, "Prefect server", "--prefect-port",
                        "FLOWFORGE_PREFECT_PORT")
    pids.check_stale()
    # Orphans of a dead child (a killed worker's flow runs) come to us, not to PID 1.
    become_subreaper()
    # What this process and the servers write (databases, keys, logs) is for this user only.
    os.umask(0o077)
    secure_home(settings)
    pids.children = children
    pids.write()

    def started(child: Child) -> None:
        children.append(child)
        pids.write()

    def guard() -> None:
        signals.check()
        for c in children:
            if not c.running():
                raise SupervisorError(c.describe_exit())

    # 1. Prefect server(s)
    prefect_home: Path | None
    auth: str | None
    if external is None:
        prefect_home = settings.prefect_home
        auth = prefect_auth(settings)
        api_url = shape.prefect_url(0)
        ui_url = api_url.removesuffix("/api")
        # This process talks to Prefect too (work pool); keep it off ~/.prefect.
        os.environ["PREFECT_HOME"] = str(prefect_home)
        _start_prefect(settings, shape, console, signals, started, auth)
    else:
        prefect_home = None
        auth = settings.prefect_auth()
        api_url = external.rstrip("/")
        ui_url = settings.prefect_ui_url or api_url.removesuffix("/api")
        source = "FLOWFORGE_PREFECT_API_URL" if settings.prefect_api_url else "PREFECT_API_URL"
        console.print(f"Using the Prefect server at {_e(api_url)} ({source}); not starting one.")
        try:
            wait_http_ok(f"{api_url}/health", 15, check=signals.check)
        except TimeoutError as exc:
            raise SupervisorError(f"the Prefect server at {api_url} is not reachable: {exc}") from exc

    def prefect_for(index: int) -> str:
        return api_url if external is not None else shape.prefect_url(index)

    # 2. work pool
    guard()
    try:
        created = ensure_work_pool(api_url, settings.work_pool, auth=auth)
    except Exception as exc:
        raise SupervisorError(f"could not create work pool {settings.work_pool!r}: {exc}") from exc
    console.print(f"Work pool {_e(repr(settings.work_pool))} " + ("created" if created else "exists"))
    if docker:
        pool, defaults = settings.docker_work_pool, docker_pool_defaults(settings)
        try:
            created = ensure_work_pool(api_url, pool, "docker", defaults, auth)
        except Exception as exc:
            raise SupervisorError(f"could not create work pool {pool!r}: {exc}") from exc
        console.print(f"Work pool {_e(repr(pool))} (docker) " + ("created" if created else "exists"))
        if not created:
            warn_unhardened_pool(api_url, pool, defaults, console, auth)
        check_runner_image(defaults["image"], console)
    reap_leftovers(api_url, console, quiet=not docker, auth=auth)

    # 3. worker(s), 4. API(s) (the APIs start while the workers register)
    guard()
    for i in range(shape.workers):
        started(start_worker(settings, prefect_for(i), prefect_home, auth=auth,
                             name=numbered("worker", i)))
    if docker:
        started(start_worker(settings, api_url, prefect_home, pool_type="docker", auth=auth))
    guard()
    apis = []
    for i, port in enumerate(shape.api_ports):
        apis.append(start_api(settings, prefect_for(i), prefect_home, app=api_app, auth=auth,
                              port=port, name=numbered("api", i)))
        started(apis[-1])
    console.print(f"Started {shape.workers} worker(s) (pool {_e(settings.work_pool)}) and "
                  f"{len(apis)} API(s) ({_e(api_app)}) on {_e(settings.api_host)} port(s) "
                  f"{', '.join(map(str, shape.api_ports))}; waiting for {_e(api_local)}/healthz ...")

    # 5. wait for the APIs, then make sure the workers really registered
    for api, port in zip(apis, shape.api_ports, strict=True):
        try:
            wait_http_ok(f"http://{local_host(settings.api_host)}:{port}/healthz",
                         API_HEALTH_TIMEOUT, check=guard)
        except TimeoutError as exc:
            raise SupervisorError(f"the API is not healthy: {exc}\nlast lines of "
                                  f"{api.log_path}:\n{api.log_tail()}") from exc
    wait_worker_online(api_url, settings.work_pool, check=guard, auth=auth, count=shape.workers)
    if docker:
        wait_worker_online(api_url, settings.docker_work_pool, check=guard, auth=auth)
    pids.state = "running"
    pids.write()
    elapsed = time.monotonic() - t0

    console.print(f"\n[green bold]FlowForge is up[/] (healthy in {elapsed:.1f}s)")
    console.print(f"  API docs    {_e(api_local)}/docs"
                  + (f" (and {len(apis) - 1} more API(s) on the next ports)" if len(apis) > 1
                     else ""))
    console.print(f"  Prefect UI  {_e(ui_url)}"
                  + (f" (it asks for the whole line in {_e(settings.home / PREFECT_AUTH_FILE)})"
                     if external is None else ""))
    console.print(f"  Admin key   {_e(settings.home / ADMIN_KEY_FILE)} (send it as "
                  "`Authorization: Bearer <key>`; make a key per person with POST /api-keys)")
    console.print(f"  Home        {_e(settings.home)}")
    console.print(f"  Logs        {_e(settings.home / 'logs')}")
    console.print("Press Ctrl-C to stop.")

    # 6. keep every child up until asked to stop: one that dies is restarted, never the others
    def crashed(run_ids: list[str], reason: str) -> None:
        for run_id in run_ids:
            try:
                with_prefect(api_url, settings.work_pool,
                             functools.partial(runs.mark_crashed, run_id=run_id, reason=reason),
                             auth)
                console.print(f"Marked flow run {run_id} Crashed: {_e(reason)}")
            except Exception as exc:  # Prefect down too: its own crash detection takes over
                console.print(f"[yellow]Could not mark flow run {run_id} Crashed: {_e(exc)}[/]")

    keeper = Keeper(children, pids, say=console.print, crashed=crashed)
    while not signals.requested:
        keeper.tick()
        time.sleep(0.2)
    console.print(f"\n{signals.name} received.")
    return 1 if keeper.failed() else 0


__all__ = ["external_prefect_url", "reap_leftovers", "run_up"]
