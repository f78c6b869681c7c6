"""Settings of `flowforge up`: the ports, the Prefect server it starts, the workers it serves.

Everything the control plane reads (`ControlPlaneSettings`) plus what only the supervisor
needs; the children get the effective values as `FLOWFORGE_*` variables.
"""

from __future__ import annotations

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


__all__ = ["StackSettings"]
