"""Settings of the warm runner, from `FLOWFORGE_*` variables (`flowforge up` sets them)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class RunnerSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FLOWFORGE_", extra="ignore")

    # Where to leave a file per forked flow-run process (named for its PID, holding its flow
    # run id) while it runs: a supervisor that outlives this worker names the runs it left.
    # Unset (a worker no `flowforge up` watches): none are written.
    run_markers: Path | None = None
    # Started containers kept ready per container option set (image, user, limits...), so
    # a container job starts in one instead of waiting for Docker to create and start it;
    # 0: none. Only with a Docker engine (DOCKER_HOST, as the docker CLI).
    container_warm: Annotated[int, Field(ge=0, le=64)] = 2


__all__ = ["RunnerSettings"]
