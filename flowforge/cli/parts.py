"""`flowforge prefect-server`, `flowforge api`, `flowforge worker`: one part of the stack each,
for a topology spread over hosts (docs/scale-out.md).

Each runs in the foreground with the environment `flowforge up` would give it, then replaces
this process (exec), so signals and exit codes are the part's own and a service manager
(systemd, Kubernetes, Compose) supervises it directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer

from flowforge.cli._app import app, settings_from_options

HomeOption = Annotated[Path | None, typer.Option(
    help="FlowForge home (Prefect home, logs, the Prefect credential). Env: FLOWFORGE_HOME.",
    show_default=False)]


def _exec(argv: list[str], env: dict[str, str], cwd: Path | None = None) -> NoReturn:
    if cwd is not None:
        os.chdir(cwd)
    os.execvpe(argv[0], argv, env)


@app.command("prefect-server")
def prefect_server(
    role: Annotated[str, typer.Option(
        help="all: API, UI and services; api: API and UI only (several may run, on PostgreSQL "
             "and Redis); services: the background services alone (one per set-up).")] = "all",
    home: HomeOption = None,
    port: Annotated[int | None, typer.Option(
        help="Port. Env: FLOWFORGE_PREFECT_PORT. Default 4200.", show_default=False)] = None,
    host: Annotated[str, typer.Option(
        help="Interface (0.0.0.0 in a container; set PREFECT_UI_API_URL to the address "
             "browsers use).")] = "127.0.0.1",
) -> None:
    """Run a Prefect server as `flowforge up` does: its database (FLOWFORGE_PREFECT_DATABASE_URL),
    Redis (FLOWFORGE_REDIS_URL), its credential (FLOWFORGE_PREFECT_AUTH_STRING, else
    <home>/prefect-auth) and tuning."""
    from flowforge.stack.home import prefect_auth, secure_home
    from flowforge.stack.prefect_server import ROLES, prefect_server_argv, prefect_server_env
    from flowforge.stack.settings import StackSettings

    if role not in ROLES:
        raise typer.BadParameter(f"one of {', '.join(ROLES)}", param_hint="--role")
    settings = settings_from_options(StackSettings, home=home, prefect_port=port)
    if role != "all" and not settings.redis_url:
        raise typer.BadParameter("a split Prefect server needs FLOWFORGE_REDIS_URL",
                                 param_hint="--role")
    os.umask(0o077)
    secure_home(settings)
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    # The operator's credential (FLOWFORGE_PREFECT_AUTH_STRING, shared by every part), else
    # the home's, made on first start as `flowforge up` does.
    given = settings.prefect_auth_string
    auth = given.get_secret_value() if given is not None else prefect_auth(settings)
    _exec(prefect_server_argv(role, settings.prefect_port, host),
          prefect_server_env(settings, auth, settings.prefect_port))


@app.command("api")
def api(
    home: HomeOption = None,
    host: Annotated[str | None, typer.Option(
        help="Interface. Env: FLOWFORGE_API_HOST. Default 127.0.0.1.", show_default=False)] = None,
    port: Annotated[int | None, typer.Option(
        help="Port. Env: FLOWFORGE_API_PORT. Default 8000.", show_default=False)] = None,
) -> None:
    """Run one FlowForge API process against the Prefect server of PREFECT_API_URL (or
    FLOWFORGE_PREFECT_API_URL); several share one FLOWFORGE_DATABASE_URL (PostgreSQL)."""
    from flowforge.stack.api_process import api_argv, api_env
    from flowforge.stack.settings import StackSettings

    settings = settings_from_options(StackSettings, home=home, api_host=host, api_port=port)
    settings.home.mkdir(parents=True, exist_ok=True)
    _exec(api_argv(settings), api_env(settings, settings.prefect_url(), None,
                                      settings.prefect_auth()))


@app.command("worker")
def worker(
    home: HomeOption = None,
    pool: Annotated[str | None, typer.Option(
        help="Work pool. Env: FLOWFORGE_WORK_POOL. Default flowforge-process.",
        show_default=False)] = None,
    name: Annotated[str | None, typer.Option(help="The worker's name in Prefect.")] = None,
) -> None:
    """Run one worker for FlowForge's pool against PREFECT_API_URL (or
    FLOWFORGE_PREFECT_API_URL), as `flowforge up` starts it: the warm runner (FLOWFORGE_RUNNER=
    process: Prefect's process worker), heartbeats on, pending-run cancellation on, in the
    project directory the deployments' pull step names."""
    from flowforge.stack.settings import StackSettings
    from flowforge.stack.workers import worker_argv, worker_env

    settings = settings_from_options(StackSettings, home=home, work_pool=pool)
    settings.project.mkdir(parents=True, exist_ok=True)
    os.umask(0o022)  # jobs' files are read by the job user too
    _exec(worker_argv(settings.work_pool, "process", name, settings.worker_limit,
                      settings.runner),
          worker_env(settings, settings.prefect_url(), None, settings.prefect_auth()),
          cwd=settings.project)


__all__ = ["api", "prefect_server", "worker"]
