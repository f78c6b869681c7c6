"""The one settings class: every knob is a `FLOWFORGE_*` variable (or a `flowforge up` option).

Lives in the library, not in `api/`, because the CLI that starts everything needs the same
values as the service it starts. Derived paths (database, Prefect home, project dir) are
properties so that changing `home` moves them all.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOWFORGE_", extra="ignore")

    home: Path = Field(default_factory=lambda: Path.home() / ".flowforge")
    api_host: str = "127.0.0.1"
    api_port: int = 8000
    prefect_port: int = 4200
    # When empty, FlowForge uses PREFECT_API_URL if set, else the server `flowforge up` starts.
    prefect_api_url: str | None = None
    prefect_ui_url: str | None = None
    database_url: str | None = None
    # The database of the Prefect server `flowforge up` starts; default SQLite in its home.
    # PostgreSQL (`postgresql://user:pw@127.0.0.1/prefect`) is what Prefect recommends beyond
    # light use: SQLite serialises every write (see docs/performance.md, webhook burst).
    prefect_database_url: str | None = None
    project_dir: Path | None = None
    work_pool: str = "flowforge-process"
    # `flowforge up --docker`: the docker work pool it creates and serves, and the image its
    # flow runs use (default: the runner image, flowforge-runner:<version>).
    docker_work_pool: str = "flowforge-docker"
    runner_image: str | None = None
    worker_query_seconds: float = 1.0
    # How often the API retries the Prefect sync of workflows marked out of sync.
    sync_interval: float = 15.0
    # Per-request timeout for Prefect calls made by the API; short, so a dead Prefect
    # server does not hang a request that could store the definition and answer.
    prefect_timeout: float = 10.0
    # Cap on all of one request's Prefect calls, retries included (Prefect's client retries
    # timeouts and 503s with backoff, which under load ran past a minute): past it the API
    # answers 503 and a definition it stored is left `pending` for the sync loop.
    # 120 s: under a full test suite's load a single run read took over a minute.
    prefect_deadline: float = Field(default=120.0, gt=0)
    # Webhook deliveries creating Prefect flow runs at the same time; the rest queue in the
    # API. Prefect's SQLite database answers "database is locked" under many parallel writes.
    webhook_prefect_concurrency: int = Field(default=4, ge=1, le=64)
    # How long `POST /hooks/{id}` waits for the run before answering `queued` (the delivery is
    # stored and its run created later): below common sender timeouts (GitHub: 10 s).
    webhook_answer_seconds: float = Field(default=5.0, ge=0, le=60)
    # SSH targets (read on the worker too): how long a connect may take, how many connect
    # failures in a row open a server's circuit breaker and for how long it then fails fast,
    # and how long a killed remote job gets between SIGTERM and SIGKILL.
    ssh_connect_timeout: float = 10.0
    ssh_breaker_failures: int = 3
    ssh_breaker_cooldown: float = 60.0
    ssh_kill_grace: float = 3.0
    # Where the worker makes local and container jobs' directories (read by the flow run).
    # Default: the system temp directory ($TMPDIR). A tmpfs (/dev/shm) makes each job's
    # set-up and clean-up cheaper, ~0.35 ms of system time a job on ext4 under load
    # (docs/performance.md), but what a job writes into its directory then lives in memory.
    job_root: Path | None = None

    @field_validator("job_root")
    @classmethod
    def _absolute_job_root(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"FLOWFORGE_JOB_ROOT must be an absolute path, got '{value}'")
        return value

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'flowforge.db'}"

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
        import os  # read here and only here: Prefect's own variable names the server to use

        return (
            self.prefect_api_url
            or os.environ.get("PREFECT_API_URL")
            or f"http://127.0.0.1:{self.prefect_port}/api"
        )

    def ui_url(self) -> str:
        return self.prefect_ui_url or self.prefect_url().removesuffix("/api")


@lru_cache
def get_settings() -> Settings:
    return Settings()


__all__ = ["Settings", "get_settings"]
