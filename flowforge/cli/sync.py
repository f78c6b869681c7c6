"""`flowforge sync [--check]`: bring Prefect in line with every stored workflow (via the API)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from flowforge.cli._app import app, settings_from_options


@app.command()
def sync(
    api_url: Annotated[str | None, typer.Option(
        help="FlowForge API base URL. Default http://<FLOWFORGE_API_HOST>:<FLOWFORGE_API_PORT>.")]
    = None,
    check: Annotated[bool, typer.Option(
        help="Change nothing; report drift (schedules, automations, deployments changed or "
             "removed in Prefect by hand) and exit 1 if there is any.")] = False,
    api_key: Annotated[str | None, typer.Option(
        envvar="FLOWFORGE_API_KEY", show_default=False,
        help="API key (an editor's or an admin's). Default: <home>/admin.key when readable.")]
    = None,
) -> None:
    """Bring Prefect in line with every stored workflow now (through the running API)."""
    from flowforge.controlplane.settings import ADMIN_KEY_FILE
    from flowforge.stack.settings import StackSettings

    settings = settings_from_options(StackSettings)
    url = (api_url or f"http://{settings.api_host}:{settings.api_port}").rstrip("/")
    if api_key is None:
        try:
            api_key = (settings.home / ADMIN_KEY_FILE).read_text().strip()
        except OSError:
            typer.echo("no API key: pass --api-key or set FLOWFORGE_API_KEY", err=True)
            raise typer.Exit(2) from None
    headers = {"Authorization": f"Bearer {api_key}"}
    if check:
        _sync_check(url, headers)
        return
    items = _api_call("POST", f"{url}/sync", "sync", headers)["workflows"]
    for item in items:
        error = f"  ({item['error']})" if item.get("error") else ""
        typer.echo(f"{item['name']}: {item['status']}{error}")
    if any(i["status"] not in ("synced", "deleted") for i in items):
        raise typer.Exit(1)


def _api_call(method: str, url: str, what: str, headers: dict[str, str]) -> Any:
    """One call to the running API; exit 2 (not 1, which means drift or a failed sync) on error."""
    import httpx

    try:
        response = httpx.request(method, url, timeout=300, headers=headers)
    except httpx.HTTPError as exc:
        typer.echo(f"cannot reach the FlowForge API ({url}): {exc}", err=True)
        raise typer.Exit(2) from exc
    if response.status_code != 200:
        typer.echo(f"{what} failed: HTTP {response.status_code}: {response.text[:500]}", err=True)
        raise typer.Exit(2)
    return response.json()


def _sync_check(url: str, headers: dict[str, str]) -> None:
    report = _api_call("GET", f"{url}/sync/check", "check", headers)
    for item in report["workflows"]:
        typer.echo(f"{item['name']}: {'in sync' if not item['drift'] else 'DRIFT'}")
        for line in item["drift"]:
            typer.echo(f"  {line}")
    if not report["in_sync"]:
        typer.echo("drift found; `flowforge sync` repairs it")
        raise typer.Exit(1)
