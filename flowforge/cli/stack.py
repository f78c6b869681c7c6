"""`flowforge up`, `flowforge gc` and `flowforge image build`: the stack and its images."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from flowforge.cli._app import app, settings_from_options


@app.command()
def up(
    home: Annotated[Path | None, typer.Option(
        help="FlowForge home (database, Prefect home, logs). Env: FLOWFORGE_HOME. "
             "Default ~/.flowforge.", show_default=False)] = None,
    api_host: Annotated[str | None, typer.Option(
        help="Interface the API binds to. Env: FLOWFORGE_API_HOST. Default 127.0.0.1.",
        show_default=False)] = None,
    api_port: Annotated[int | None, typer.Option(
        help="API port. Env: FLOWFORGE_API_PORT. Default 8000.", show_default=False)] = None,
    prefect_port: Annotated[int | None, typer.Option(
        help="Port of the Prefect server started here (unused when PREFECT_API_URL is set). "
             "Env: FLOWFORGE_PREFECT_PORT. Default 4200.", show_default=False)] = None,
    api_app: Annotated[str, typer.Option(
        envvar="FLOWFORGE_API_APP", hidden=True,
        help="ASGI app the API child serves (module:attribute).")] = "api.main:app",
    docker: Annotated[bool, typer.Option(
        "--docker", help="Also create the docker work pool (FLOWFORGE_DOCKER_WORK_POOL, default "
        "flowforge-docker) and start a docker worker for it; needs a Docker engine (DOCKER_HOST) "
        "and the runner image (`flowforge image build`).")] = False,
    database_url: Annotated[str | None, typer.Option(
        help="FlowForge's database (postgresql://...). Env: FLOWFORGE_DATABASE_URL. "
             "Default SQLite in the home.", show_default=False)] = None,
    prefect_database_url: Annotated[str | None, typer.Option(
        help="The Prefect server's database (postgresql://...). Env: "
             "FLOWFORGE_PREFECT_DATABASE_URL. Default SQLite in the home.",
        show_default=False)] = None,
    redis_url: Annotated[str | None, typer.Option(
        help="Redis (redis://...) for Prefect's messaging (prefect-redis) and the API's rate "
             "limits. Env: FLOWFORGE_REDIS_URL.", show_default=False)] = None,
    prefect_api_replicas: Annotated[int | None, typer.Option(
        help="Start N Prefect API servers without services (ports --prefect-port and up) and "
             "one services process; needs --prefect-database-url and --redis-url. Env: "
             "FLOWFORGE_PREFECT_API_REPLICAS. Default 0: one server with its services.",
        show_default=False)] = None,
    api_replicas: Annotated[int | None, typer.Option(
        help="FlowForge API processes on --api-port and the next ports; more than one needs "
             "--database-url. Env: FLOWFORGE_API_REPLICAS. Default 1.", show_default=False)] = None,
    workers: Annotated[int | None, typer.Option(
        help="Process workers on the default pool. Env: FLOWFORGE_WORKERS. Default 1.",
        show_default=False)] = None,
    runner: Annotated[str | None, typer.Option(
        help="What serves the default pool: warm (flow runs forked from a warm process, "
             "started on Prefect's events) or process (Prefect's own process worker). Env: "
             "FLOWFORGE_RUNNER. Default warm.", show_default=False)] = None,
) -> None:
    """Start the Prefect server, a process worker and the API; Ctrl-C stops them all.

    The scale-out options start Prefect's multi-server shape on this machine (docs/scale-out.md);
    `flowforge prefect-server`, `flowforge api` and `flowforge worker` start one part each, for
    parts on other hosts.

    If PREFECT_API_URL (or FLOWFORGE_PREFECT_API_URL) is set, that Prefect server is used and none is started.

    Child logs go to <home>/logs/, child PIDs to <home>/run/pids.json.
    """
    from flowforge.stack.settings import StackSettings
    from flowforge.stack.up import run_up

    settings = settings_from_options(
        StackSettings, home=home, api_host=api_host, api_port=api_port, prefect_port=prefect_port,
        database_url=database_url, prefect_database_url=prefect_database_url, redis_url=redis_url,
        prefect_api_replicas=prefect_api_replicas, api_replicas=api_replicas, workers=workers,
        runner=runner)
    code = run_up(settings, api_app=api_app, docker=docker)
    raise typer.Exit(code)


image_app = typer.Typer(help="FlowForge's Docker images, built locally (no registry).",
                        no_args_is_help=True)
app.add_typer(image_app, name="image")


@image_app.command("build")
def image_build(
    base: Annotated[str | None, typer.Option(
        help="Build FROM this image (already in the engine; needs python3 3.11, bash, node) "
             "instead of a debootstrap Debian.")] = None,
    service: Annotated[bool, typer.Option(
        "--service", help="Build the FlowForge service image (flowforge:<version>) instead of "
        "the runner (flowforge-runner:<version>).")] = False,
    tag: Annotated[str | None, typer.Option(help="Image name:tag to build.")] = None,
) -> None:
    """Build the runner image for container jobs and the docker pool (or the service image)."""
    from flowforge.core.errors import ImageBuildError
    from flowforge.image import build_image

    try:
        name = build_image("service" if service else "runner", base=base, tag=tag,
                           log=lambda line: typer.echo(line, err=True))
    except ImageBuildError as exc:
        typer.echo(f"image build failed: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(name)


@app.command()
def gc(
    all_containers: Annotated[bool, typer.Option(
        "--all", help="Remove every FlowForge job container, also of runs still running and "
        "of other Prefect servers.")]
    = False,
) -> None:
    """Remove what jobs left behind when their run is over (e.g. a worker was killed).

    Every target kind's executor reaps its own leftovers (job containers, for now). A
    container of a run of this Prefect (PREFECT_API_URL / FLOWFORGE_PREFECT_API_URL) goes when
    Prefect says the run is in a final state or does not know it; when Prefect cannot be asked,
    it stays. Containers of other Prefect servers' runs are left alone (unless --all).
    """
    from flowforge.controlplane.client import prefect_settings
    from flowforge.controlplane.settings import ControlPlaneSettings
    from flowforge.runtime.executors import reap_all
    from flowforge.runtime.prefect_client import run_finished

    settings = settings_from_options(ControlPlaneSettings)
    url = settings.prefect_url()
    with prefect_settings(url, settings.prefect_auth()):
        reaped = (reap_all(lambda _: True) if all_containers
                  else reap_all(run_finished, scope=url))
    failed = [r for r in reaped if r.error is not None]
    for result in reaped:
        for name in result.removed:
            typer.echo(f"removed {name}")
    for result in failed:  # the SDK's own errors: its engine is not reachable
        typer.echo(f"gc of {result.kind} leftovers failed: {result.error}", err=True)
    typer.echo(f"{sum(len(r.removed) for r in reaped)} container(s) removed")
    if failed:
        raise typer.Exit(2)


