"""The docker work pool `flowforge up --docker` creates: its defaults, and a check of old ones."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape

from flowforge.controlplane import pools
from flowforge.core.images import runner_image_name
from flowforge.core.targets.container import ISOLATION
from flowforge.stack.settings import StackSettings
from flowforge.stack.workers import with_prefect


def _e(value: object) -> str:
    """Text for rich markup (names and errors may contain brackets)."""
    return escape(str(value))


#: Limits of a docker-pool flow-run container (the whole run: Prefect, the launcher, every
#: local job) and its /tmp, where the jobs' directories live (counted in the memory).
DOCKER_POOL_MEMORY = "4g"
DOCKER_POOL_PIDS = 4096
DOCKER_POOL_TMPFS = "rw,nosuid,nodev,exec,size=1g"



def docker_pool_defaults(settings: StackSettings) -> dict[str, Any]:
    """Job-variable defaults of the docker pool: the runner image, which has FlowForge and
    Prefect, with the project directory (generated flows) mounted read-only at its own path,
    so the deployments' pull step finds it; host networking, the only way here to reach a
    Prefect API on 127.0.0.1 (for other modes prefect-docker rewrites 127.0.0.1 to
    host.docker.internal); never pull (no registry); a writable PREFECT_HOME instead of the
    worker's own, which prefect-docker would pass on.

    The flow-run container is hardened as a container job is, bar the network: not root (the
    project's owner, or nobody for a root-owned project, which FlowForge writes readable to
    all), read-only root with a tmpfs /tmp for the jobs' directories, every capability
    dropped, no-new-privileges, memory and pids limits, and tini as PID 1 so a cancellation's
    SIGTERM reaches the flow run and the jobs' orphans are reaped. Prefect's docker worker
    would run the image's user (root) with every default capability.
    """
    project = str(settings.project)
    return {
        "image": settings.runner_image or runner_image_name(),
        "image_pull_policy": "Never",
        "network_mode": "host",
        "volumes": [f"{project}:{project}:ro"],
        "env": {"PREFECT_HOME": "/tmp/prefect", "HOME": "/tmp"},
        "auto_remove": True,
        "mem_limit": DOCKER_POOL_MEMORY,
        "memswap_limit": DOCKER_POOL_MEMORY,  # no swap: the limit is the limit
        "container_create_kwargs": {
            **ISOLATION,
            "user": pool_user(settings.project),
            "tmpfs": {"/tmp": DOCKER_POOL_TMPFS},
            "pids_limit": DOCKER_POOL_PIDS,
        },
    }


def pool_user(project: Path) -> str:
    """The docker pool's `uid:gid`: the project directory's owner, so the flow run can read
    the generated flows even in a private directory; nobody when that owner is root (or the
    directory is not there yet and this process is root)."""
    try:
        info = project.stat()
        uid, gid = info.st_uid, info.st_gid
    except OSError:
        uid, gid = os.getuid(), os.getgid()
    return "65534:65534" if uid == 0 else f"{uid}:{gid}"


#: The docker pool's job variables that isolate its flow-run containers.
HARDENING_KEYS = ("container_create_kwargs", "mem_limit", "memswap_limit")


def warn_unhardened_pool(api_url: str, pool: str, defaults: dict[str, Any],
                         console: Console, auth: str | None = None) -> list[str]:
    """Say so when an existing docker pool lacks FlowForge's container hardening (made by an
    older FlowForge, or edited); it is left as it is. Returns the job variables that differ."""
    try:
        drift: list[str] = with_prefect(api_url, pool, lambda client: pools.pool_drift(
            client, pool, defaults, HARDENING_KEYS), auth)
    except Exception as exc:  # a warning only: never stops `up`
        console.print(f"[yellow]Warning:[/] could not read work pool {_e(repr(pool))}: {_e(exc)}")
        return []
    if drift:
        console.print(
            f"[yellow]Warning:[/] work pool {_e(repr(pool))} does not have FlowForge's container "
            f"hardening ({_e(', '.join(drift))} differ from its defaults): its flow runs may run "
            f"as root with default capabilities. It was made by an older FlowForge or edited; "
            f"`prefect work-pool delete {_e(pool)}` and `flowforge up --docker` re-create it.")
    return drift


def check_runner_image(image: str, console: Console) -> None:
    """Warn now, not at the first docker-pool run, when the pool's image is missing (it is
    never pulled)."""
    from flowforge.runtime.executors.container import docker_client  # Docker SDK on use

    try:
        docker_client().images.get(image)
    except Exception as exc:
        console.print(f"[yellow]Warning:[/] image {_e(image)} is not available ({_e(exc)}); "
                      "build it with `flowforge image build` before running on the docker pool")


__all__ = ["DOCKER_POOL_MEMORY", "DOCKER_POOL_PIDS", "DOCKER_POOL_TMPFS", "HARDENING_KEYS",
           "check_runner_image", "docker_pool_defaults", "pool_user", "warn_unhardened_pool"]
