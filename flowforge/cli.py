"""The `flowforge` command: thin Typer wrappers over plain library functions.

Each command builds a `Settings` (options override FLOWFORGE_* env vars), calls one plain
function and turns its result into an exit code. Heavy imports (Prefect) stay inside the
functions so `flowforge --help` is fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from flowforge.settings import Settings

app = typer.Typer(
    name="flowforge",
    help="FlowForge: workflows defined as data, compiled to Prefect flows.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def settings_from_options(**options: Any) -> Settings:
    """Settings from the environment, with every option that was given (not None) on top.

    `home` is made absolute (children run in other directories and get it through env vars).
    """
    settings = Settings(**{k: v for k, v in options.items() if v is not None})
    return settings.model_copy(update={"home": settings.home.expanduser().absolute()})


@app.callback()
def main() -> None:
    """FlowForge: workflows defined as data, compiled to Prefect flows."""


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
) -> None:
    """Start the Prefect server, a process worker and the API; Ctrl-C stops them all.

    If PREFECT_API_URL (or FLOWFORGE_PREFECT_API_URL) is set, that Prefect server is used and none is started.

    Child logs go to <home>/logs/, child PIDs to <home>/run/pids.json.
    """
    from flowforge.supervisor import run_up

    settings = settings_from_options(home=home, api_host=api_host, api_port=api_port,
                                     prefect_port=prefect_port)
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
    from flowforge.errors import ImageBuildError
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
    """Remove job containers left behind by runs that are over (e.g. a worker was killed).

    A container of a run of this Prefect (PREFECT_API_URL / FLOWFORGE_PREFECT_API_URL) goes when
    Prefect says the run is in a final state or does not know it; when Prefect cannot be asked,
    it stays. Containers of other Prefect servers' runs are left alone (unless --all).
    """
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flowforge.runtime.container import prefect_run_finished, reap

    url = settings_from_options().prefect_url()
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            removed = (reap(lambda _: True) if all_containers
                       else reap(prefect_run_finished, scope=url))
    except Exception as exc:  # the Docker SDK's own errors: the engine is not reachable
        typer.echo(f"gc failed: cannot reach the Docker engine: {exc}", err=True)
        raise typer.Exit(2) from exc
    for name in removed:
        typer.echo(f"removed {name}")
    typer.echo(f"{len(removed)} container(s) removed")


def compile_files(files: list[Path], out: Path, check: bool, work_pool: str,
                  pull_dir: str) -> list[str]:
    """Compile workflow files into `out/flows` and `out/prefect.yaml`; return what was stale.

    With `check`, nothing is written: the return value lists every file that differs from
    what compiling would write, which is how CI catches a hand-edited or stale flow.
    """
    import tempfile

    from flowforge.compiler import compile_workflow
    from flowforge.prefect_sync import write_prefect_yaml
    from flowforge.spec import load_workflow

    compiled = [compile_workflow(load_workflow(f.read_text())) for f in files]
    target = Path(tempfile.mkdtemp()) if check else out
    for c in compiled:
        c.write(target / "flows")
    if check:  # prefect.yaml lists every flow in out/flows, so compare against a full copy
        for existing in sorted((out / "flows").glob("*.json")):
            if not (target / "flows" / existing.name).exists():
                (target / "flows" / existing.name).write_text(existing.read_text())
    write_prefect_yaml(target, work_pool, pull_dir=pull_dir)
    if not check:
        return []
    stale = []
    for c in compiled:
        for name in (f"{c.module}.py", f"{c.module}.json"):
            mine, theirs = target / "flows" / name, out / "flows" / name
            if not theirs.exists() or theirs.read_text() != mine.read_text():
                stale.append(str(theirs))
    ours, theirs = target / "prefect.yaml", out / "prefect.yaml"
    if not theirs.exists() or theirs.read_text() != ours.read_text():
        stale.append(str(theirs))
    return stale


@app.command("compile")
def compile_command(
    files: Annotated[list[Path], typer.Argument(help="Workflow documents (YAML or JSON).",
                                                exists=True, dir_okay=False)],
    out: Annotated[Path, typer.Option(help="Project directory: flows/ and prefect.yaml go here.")]
    = Path("."),
    check: Annotated[bool, typer.Option(help="Write nothing; exit 1 if any output is stale.")]
    = False,
    work_pool: Annotated[str, typer.Option(help="Work pool named in prefect.yaml.")]
    = "flowforge-process",
    pull_dir: Annotated[str, typer.Option(
        help="Working directory of the deployments' pull step (Prefect resolves {{ $VAR }}).")]
    = "{{ $PWD }}",
) -> None:
    """Compile workflow documents into Prefect flows (one .py and one .json per workflow)."""
    from flowforge.errors import SpecError

    try:
        stale = compile_files(files, out, check, work_pool, pull_dir)
    except SpecError as exc:
        typer.echo(f"invalid workflow: {exc.message}", err=True)
        raise typer.Exit(2) from exc
    if stale:
        typer.echo("stale (run `flowforge compile` without --check): " + ", ".join(stale))
        raise typer.Exit(1)
    typer.echo(("up to date: " if check else "compiled: ") + ", ".join(str(f) for f in files))


@app.command()
def validate(
    files: Annotated[list[Path], typer.Argument(exists=True, dir_okay=False)],
    as_json: Annotated[bool, typer.Option("--json", help="Print results as JSON.")] = False,
) -> None:
    """Validate workflow documents; report every problem, each naming its field and job."""
    import json

    from flowforge.errors import SpecError
    from flowforge.spec import load_workflow

    results: dict[str, Any] = {}
    for f in files:
        try:
            load_workflow(f.read_text())
            results[str(f)] = {"valid": True, "problems": []}
        except SpecError as exc:
            results[str(f)] = {"valid": False, "problems": exc.problems}
    if as_json:
        typer.echo(json.dumps(results, indent=2))
    else:
        for name, result in results.items():
            typer.echo(f"{name}: {'ok' if result['valid'] else 'INVALID'}")
            for problem in result["problems"]:
                typer.echo(f"  {problem.get('field') or '(document)'}: {problem['message']}")
    if not all(r["valid"] for r in results.values()):
        raise typer.Exit(1)


@app.command()
def sync(
    api_url: Annotated[str | None, typer.Option(
        help="FlowForge API base URL. Default http://<FLOWFORGE_API_HOST>:<FLOWFORGE_API_PORT>.")]
    = None,
    check: Annotated[bool, typer.Option(
        help="Change nothing; report drift (schedules, automations, deployments changed or "
             "removed in Prefect by hand) and exit 1 if there is any.")] = False,
) -> None:
    """Bring Prefect in line with every stored workflow now (through the running API)."""
    settings = settings_from_options()
    url = (api_url or f"http://{settings.api_host}:{settings.api_port}").rstrip("/")
    if check:
        _sync_check(url)
        return
    items = _api_call("POST", f"{url}/sync", "sync")["workflows"]
    for item in items:
        error = f"  ({item['error']})" if item.get("error") else ""
        typer.echo(f"{item['name']}: {item['status']}{error}")
    if any(i["status"] not in ("synced", "deleted") for i in items):
        raise typer.Exit(1)


def _api_call(method: str, url: str, what: str) -> Any:
    """One call to the running API; exit 2 (not 1, which means drift or a failed sync) on error."""
    import httpx

    try:
        response = httpx.request(method, url, timeout=300)
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach the FlowForge API ({url}): {exc}", err=True)
        raise typer.Exit(2) from exc
    if response.status_code != 200:
        typer.echo(f"{what} failed: HTTP {response.status_code}: {response.text[:500]}", err=True)
        raise typer.Exit(2)
    return response.json()


def _sync_check(url: str) -> None:
    report = _api_call("GET", f"{url}/sync/check", "check")
    for item in report["workflows"]:
        typer.echo(f"{item['name']}: {'in sync' if not item['drift'] else 'DRIFT'}")
        for line in item["drift"]:
            typer.echo(f"  {line}")
    if not report["in_sync"]:
        typer.echo("drift found; `flowforge sync` repairs it")
        raise typer.Exit(1)


__all__ = ["app", "compile_files", "settings_from_options"]
