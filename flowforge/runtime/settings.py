"""The worker's settings: what a flow run reads of its environment (`FLOWFORGE_*`).

Only what runs inside a flow run belongs here; a worker needs none of the API's or the
supervisor's settings, and the API none of these.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class WorkerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOWFORGE_", extra="ignore")

    # Where the worker makes local and container jobs' directories. Default: the system temp
    # directory ($TMPDIR). A tmpfs (/dev/shm) makes each job's set-up and clean-up cheaper,
    # ~0.35 ms of system time a job on ext4 under load (docs/performance.md), but what a job
    # writes into its directory then lives in memory.
    job_root: Path | None = None
    # Who local script jobs run as. Unset: `nobody` when the worker runs as root (a job must
    # not read the worker's environment, its files or the launcher's /proc), the worker's
    # own user otherwise; a user name or uid; empty: the worker's own user, even as root.
    job_user: str | None = None
    # The interpreter of local python jobs when the job user cannot reach the worker's own
    # (a virtualenv under /root). Unset: `python3` on the job's PATH.
    job_python: str | None = None
    # Addresses http and message jobs may reach although they are loopback, private,
    # link-local or metadata ones: IPs, CIDRs or host names, each with an optional :port.
    egress_allow: str = ""
    # SSH targets: how long a connect may take, how many connect failures in a row open a
    # server's circuit breaker and for how long it then fails fast, and how long a killed
    # remote job gets between SIGTERM and SIGKILL.
    ssh_connect_timeout: float = 10.0
    ssh_breaker_failures: int = 3
    ssh_breaker_cooldown: float = 60.0
    ssh_kill_grace: float = 3.0
    # The Unix socket of the worker's pool of pre-warmed containers; the warm runner sets it
    # for the flow runs it forks. Unset: every container job's container is created for it.
    container_pool: Path | None = None

    @field_validator("job_root")
    @classmethod
    def _absolute_job_root(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_absolute():
            raise ValueError(f"FLOWFORGE_JOB_ROOT must be an absolute path, got '{value}'")
        return value


__all__ = ["WorkerSettings"]
