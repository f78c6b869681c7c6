"""The API's settings: the control plane's, plus its database and its webhook inbox."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import SettingsConfigDict

from flowforge.controlplane.settings import ControlPlaneSettings


class ApiSettings(ControlPlaneSettings):
    model_config = SettingsConfigDict(env_prefix="FLOWFORGE_", extra="ignore")

    database_url: str | None = None
    # Webhook deliveries creating Prefect flow runs at the same time; the rest queue in the
    # API. Prefect's SQLite database answers "database is locked" under many parallel writes.
    webhook_prefect_concurrency: int = Field(default=4, ge=1, le=64)
    # How long `POST /hooks/{id}` waits for the run before answering `queued` (the delivery is
    # stored and its run created later): below common sender timeouts (GitHub: 10 s).
    webhook_answer_seconds: float = Field(default=5.0, ge=0, le=60)
    # What `/servers` reports and tests with; the same variables the worker reads.
    ssh_connect_timeout: float = 10.0
    ssh_breaker_failures: int = 3

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'flowforge.db'}"


@lru_cache
def get_settings() -> ApiSettings:
    return ApiSettings()


__all__ = ["ApiSettings", "get_settings"]
