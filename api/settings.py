"""The API's settings: the control plane's, plus its database and its webhook inbox."""

from __future__ import annotations

from functools import lru_cache
from typing import Annotated, Any

from pydantic import Field, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

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
    # How far a signed delivery's timestamp may be from this server's clock before it is
    # refused as delayed or replayed.
    webhook_tolerance: float = Field(default=300.0, gt=0)
    # What `/servers` reports and tests with; the same variables the worker reads.
    ssh_connect_timeout: float = 10.0
    ssh_breaker_failures: int = 3
    # Every request body past this is refused (413) before it is read whole.
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Origins a browser may call the API from (CORS), comma-separated; none by default.
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Rate limits, in the `limits` package's notation ("120/minute", "10/second").
    rate_limit_runs: str = "120/minute"  # run starts per key
    rate_limit_hooks: str = "600/minute"  # deliveries per webhook trigger
    rate_limit_auth: str = "30/minute"  # failed authentications per client address
    # Seconds each part `/healthz` checks (database, Prefect) may take before it is reported
    # as not answering: a frozen Prefect must not freeze the health check too.
    health_timeout: float = Field(default=3.0, gt=0, le=60)
    # Shared state of several API processes (rate limits); in memory when not set.
    redis_url: str | None = None

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [origin.strip() for origin in value.split(",") if origin.strip()]
        return value

    @property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'flowforge.db'}"


@lru_cache
def get_settings() -> ApiSettings:
    return ApiSettings()


__all__ = ["ApiSettings", "get_settings"]
