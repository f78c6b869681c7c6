"""Settings of `flowforge up`: the ports, the Prefect server it starts, the workers it serves.

Everything the control plane reads (`ControlPlaneSettings`) plus what only the supervisor
needs; the children get the effective values as `FLOWFORGE_*` variables.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flowforge.controlplane.settings import ControlPlaneSettings


class StackSettings(ControlPlaneSettings):
    model_config = SettingsConfigDict(env_prefix="FLOWFORGE_", extra="ignore")

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # The database of the Prefect server `flowforge up` starts; default SQLite in its home.
    # PostgreSQL (`postgresql://user:pw@127.0.0.1/prefect`) is what Prefect recommends beyond
    # light use: SQLite serialises every write (see docs/performance.md, webhook burst).
    prefect_database_url: str | None = None
    # `flowforge up --docker`: the docker work pool it creates and serves, and the image its
    # flow runs use (default: the runner image, flowforge-runner:<version>).
    docker_work_pool: str = "flowforge-docker"
    runner_image: str | None = None
    worker_query_seconds: float = 1.0
    # The scale-out topology (docs/scale-out.md). FlowForge's own database (the API's
    # FLOWFORGE_DATABASE_URL; default SQLite in the home) and Redis: with it the Prefect
    # server uses prefect-redis for messaging, its cache, event ordering, leases and its
    # services' coordination, and the API its rate limits.
    database_url: str | None = None
    redis_url: str | None = None
    # 0: one `prefect server start` with its services in it. N: N API servers without
    # services (ports prefect_port, prefect_port+1, ...) and one services process; needs
    # PostgreSQL and Redis, as Prefect's multi-server set-up does.
    prefect_api_replicas: int = Field(default=0, ge=0, le=16)
    # FlowForge API processes on api_port, api_port+1, ...; several need PostgreSQL (the
    # one-syncer lock lives there).
    api_replicas: int = Field(default=1, ge=1, le=16)
    # Process workers on the default pool, and how many flow runs each runs at once (Prefect's
    # `--limit`; unset: no limit, Prefect's default). Each flow run is a Python process of
    # ~100 MB: a burst of hundreds of due runs on a small machine wants a limit.
    workers: int = Field(default=1, ge=1, le=32)
    worker_limit: int | None = Field(default=None, ge=1)
    # What serves the default pool: `warm`, FlowForge's runner (flow runs forked from a process
    # that has Prefect and FlowForge imported, woken by Prefect's events), or `process`,
    # Prefect's own process worker (an interpreter per run: ~2 s more per start).
    runner: Literal["warm", "process"] = "warm"


__all__ = ["StackSettings"]
