"""`target: {container: {...}}`: a fresh, hardened Docker container per job."""

from __future__ import annotations

import re
from typing import Annotated, ClassVar, Final, Literal

from pydantic import Field, field_validator

from flowforge.core.checks import Bad, CheckContext
from flowforge.core.names import ENV_NAME_RE, RESERVED_ENV_PREFIXES
from flowforge.core.targets.base import TargetBase

MEMORY_RE: Final = re.compile(r"^[1-9][0-9]*[bkmg]?$", re.IGNORECASE)
#: docker-py create options every FlowForge container gets, container jobs and the docker
#: pool's flow runs alike: no capabilities, no privilege gain, tini as PID 1 (SIGTERM on stop
#: reaches the process, orphans are reaped), a read-only root.
ISOLATION: Final[dict[str, object]] = {
    "read_only": True,
    "cap_drop": ["ALL"],
    "security_opt": ["no-new-privileges"],
    "init": True,
}



def memory_bytes(size: str) -> int:
    """Docker's size notation (`128m`) in bytes."""
    units = {"b": 1, "k": 1024, "m": 1024**2, "g": 1024**3}
    unit = size[-1].lower()
    return int(size[:-1]) * units[unit] if unit in units else int(size)


class ContainerTarget(TargetBase):
    """Every default hardens: no network, read-only root, a non-root user, memory and pids
    limits. `network: host` must also be allowed by the workflow (`settings.allow_host_network`),
    so one job cannot quietly give itself the network."""

    kind: ClassVar[str] = "container"

    image: str | None = None  # None: the runner image, flowforge-runner:<version>
    memory: str = "512m"
    cpus: Annotated[float | None, Field(gt=0, le=256)] = None
    pids_limit: Annotated[int, Field(ge=8, le=1_000_000)] = 256
    network: Literal["none", "host"] = "none"
    env: dict[str, str] = Field(default_factory=dict)
    workdir: str | None = None  # None: the job directory
    user: str = "65534:65534"
    read_only: bool = True
    timeout: Annotated[float | None, Field(gt=0, le=7 * 86400)] = None

    @field_validator("memory")
    @classmethod
    def _memory(cls, value: str) -> str:
        if not MEMORY_RE.match(value):
            raise ValueError(f"memory {value!r} must be a size like 128m, 2g or 1048576")
        if memory_bytes(value) < 6 * 1024 * 1024:
            raise ValueError(f"memory {value!r} is below Docker's minimum of 6m")
        return value.lower()

    @field_validator("workdir")
    @classmethod
    def _workdir(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"workdir {value!r} must be an absolute path")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if not re.match(r"^[A-Za-z0-9_.-]+(:[A-Za-z0-9_.-]+)?$", value):
            raise ValueError(f"user {value!r} must be NAME, UID or UID:GID")
        return value

    def check(self, ctx: CheckContext, bad: Bad) -> None:
        if self.network == "host" and not ctx.settings.allow_host_network:
            bad("network", "network 'host' needs the workflow setting allow_host_network: true")
        for key in self.env:
            if not ENV_NAME_RE.match(key):
                bad(f"env.{key}", f"env name '{key}' is not a valid variable name")
            elif key.startswith(RESERVED_ENV_PREFIXES):
                bad(f"env.{key}", f"env name '{key}' is reserved")


__all__ = ["ISOLATION", "MEMORY_RE", "ContainerTarget", "memory_bytes"]
