"""Settings of whatever drives Prefect from outside a flow run: the API, the CLI, `up`.

Read from `FLOWFORGE_*` variables. Derived paths (project dir, Prefect home) are properties so
that changing `home` moves them all. The API's and the supervisor's settings extend this class
with their own; a worker reads none of it (`flowforge.runtime.settings`).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from flowforge.controlplane.client import PrefectTarget

#: The file in the home holding the credential of the Prefect server `flowforge up` starts.
PREFECT_AUTH_FILE = "prefect-auth"
#: The file in the home the API writes the first admin key to (0600), on a home without keys.
ADMIN_KEY_FILE = "admin.key"


class ControlPlaneSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOWFORGE_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".flowforge")
    prefect_port: int = 4200
    # When empty, FlowForge uses PREFECT_API_URL if set, else the server `flowforge up` starts.
    prefect_api_url: str | None = None
    prefect_ui_url: str | None = None
    project_dir: Path | None = None
    work_pool: str = "flowforge-process"
    # Per-request timeout for Prefect calls; short, so a dead Prefect server does not hang a
    # request that could store the definition and answer.
    prefect_timeout: float = 10.0
    # Cap on all of one request's Prefect calls, retries included (Prefect's client retries
    # timeouts and 503s with backoff, which under load ran past a minute): past it the API
    # answers 503 and a definition it stored is left `pending` for the sync loop.
    # 120 s: under a full test suite's load a single run read took over a minute.
    prefect_deadline: float = Field(default=120.0, gt=0)
    # How often the API retries the Prefect sync of workflows marked out of sync.
    sync_interval: float = 15.0
    # How long a definition write waits for Prefect's health check before it answers with
    # the definition stored `pending` (the sync loop deploys it once Prefect is back).
    prefect_probe_timeout: float = Field(default=5.0, gt=0, le=120)
    # Seconds between a flow run's heartbeats (Prefect's minimum is 30): the workers
    # FlowForge starts send them, and a run silent for twice this is marked Crashed.
    heartbeat_seconds: int = Field(default=30, ge=30, le=3600)
    # The Prefect server's credential (`user:password`). Unset: PREFECT_API_AUTH_STRING, else
    # the `prefect-auth` file `flowforge up` keeps in the home for the server it starts.
    prefect_auth_string: SecretStr | None = None

    @property
    def project(self) -> Path:
        """Where generated flows and prefect.yaml live; the deployments' working directory."""
        return self.project_dir or self.home / "project"

    @property
    def flows_dir(self) -> Path:
        return self.project / "flows"

    @property
    def prefect_home(self) -> Path:
        return self.home / "prefect"

    def prefect_url(self) -> str:
        # Read here and only here: Prefect's own variable names the server to use.
        return (self.prefect_api_url or os.environ.get("PREFECT_API_URL")
                or f"http://127.0.0.1:{self.prefect_port}/api")

    def prefect_auth(self) -> str | None:
        """The credential to send to Prefect, or None when it is open."""
        if self.prefect_auth_string is not None:
            return self.prefect_auth_string.get_secret_value() or None
        if os.environ.get("PREFECT_API_AUTH_STRING"):
            return os.environ["PREFECT_API_AUTH_STRING"]
        try:
            return (self.home / PREFECT_AUTH_FILE).read_text().strip() or None
        except OSError:
            return None

    def ui_url(self) -> str:
        return self.prefect_ui_url or self.prefect_url().removesuffix("/api")

    def target(self) -> PrefectTarget:
        """Where and how workflows are deployed, with this configuration's bounds."""
        return PrefectTarget(api_url=self.prefect_url(), project_dir=self.project,
                             work_pool=self.work_pool, timeout=self.prefect_timeout,
                             deadline=self.prefect_deadline, auth_string=self.prefect_auth(),
                             heartbeat_seconds=self.heartbeat_seconds,
                             probe_timeout=self.prefect_probe_timeout)


__all__ = ["ADMIN_KEY_FILE", "PREFECT_AUTH_FILE", "ControlPlaneSettings"]
