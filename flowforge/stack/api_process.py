"""The FlowForge API as a child of `flowforge up`: uvicorn, with the effective settings."""

from __future__ import annotations

from pathlib import Path

from flowforge.stack.children import Child, base_env
from flowforge.stack.prefect_server import SERVE_OFF_LOOP_GC
from flowforge.stack.settings import StackSettings

DEFAULT_API_APP = "api.main:app"
API_HEALTH_TIMEOUT = 90.0


def api_env(settings: StackSettings, prefect_api_url: str, prefect_home: Path | None,
            auth: str | None = None) -> dict[str, str]:
    """The API child's env: every effective setting as FLOWFORGE_*, so it sees what `up` sees;
    the Prefect credential as Prefect's own variable."""
    env = base_env()
    effective = settings.model_copy(update={"prefect_api_url": prefect_api_url})
    env.pop("FLOWFORGE_PREFECT_AUTH_STRING", None)
    if auth:
        env["PREFECT_API_AUTH_STRING"] = auth
    for name, value in effective.model_dump(exclude={"prefect_auth_string"}).items():
        key = f"FLOWFORGE_{name.upper()}"
        if value is None:
            env.pop(key, None)
        else:
            env[key] = str(value)
    env["FLOWFORGE_PREFECT_UI_URL"] = effective.ui_url()
    env["PREFECT_API_URL"] = prefect_api_url
    if prefect_home is not None:
        env["PREFECT_HOME"] = str(prefect_home)
    return env


def api_argv(settings: StackSettings, app: str = DEFAULT_API_APP,
             port: int | None = None) -> list[str]:
    return [*SERVE_OFF_LOOP_GC, "uvicorn", app, "--host", settings.api_host,
            "--port", str(port or settings.api_port)]


def start_api(settings: StackSettings, prefect_api_url: str, prefect_home: Path | None = None,
              app: str = DEFAULT_API_APP, auth: str | None = None, port: int | None = None,
              name: str = "api") -> Child:
    """Start uvicorn on <api_host>:<port> (default api_port) serving `app` (module:attribute)."""
    child = Child(
        name=name,
        argv=api_argv(settings, app, port),
        env=api_env(settings, prefect_api_url, prefect_home, auth),
        log_path=settings.home / "logs" / f"{name}.log",
    )
    child.start()
    return child


__all__ = ["API_HEALTH_TIMEOUT", "DEFAULT_API_APP", "api_argv", "api_env", "start_api"]
