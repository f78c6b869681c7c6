"""Settings of the warm runner, from `FLOWFORGE_*` variables (`flowforge up` sets them)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class RunnerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOWFORGE_", extra="ignore")

    # Where to leave a file per forked flow-run process (named for its PID, holding its flow
    # run id) while it runs: a supervisor that outlives this worker names the runs it left.
    # Unset (a worker no `flowforge up` watches): none are written.
    run_markers: Path | None = None


__all__ = ["RunnerSettings"]
