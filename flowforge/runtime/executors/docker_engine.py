"""The Docker engine as job containers see it: one client per process, FlowForge's labels on
every job container, and the leftovers a killed worker, run or pool leaves there.

Every job container carries `flowforge.workflow`, `flowforge.run-id` and `flowforge.job`
(a warm one, made before its job, carries `warm_containers`' labels instead and names its run
in a claim file), and `flowforge.prefect-api`: a reaper only judges runs of its own Prefect, so
two FlowForge installations sharing one engine never remove each other's containers.
`flowforge gc`, `flowforge up` and every run with container jobs reap through `reap`.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from flowforge.runtime.executors import warm_containers
from flowforge.runtime.executors.warm_containers import LABEL_DIR, LABEL_OWNER, LABEL_WARM
from flowforge.runtime.prefect_client import run_finished

LABEL_WORKFLOW: Final = "flowforge.workflow"
LABEL_RUN: Final = "flowforge.run-id"
LABEL_JOB: Final = "flowforge.job"
#: The Prefect API the creating run reported to: a reaper only judges runs of its own Prefect,
#: so two FlowForge installations sharing one engine never remove each other's containers.
LABEL_PREFECT: Final = "flowforge.prefect-api"
_client_lock = threading.Lock()
_client: Any = None

def docker_client() -> Any:
    """One Docker client per process (DOCKER_HOST, like the docker CLI); thread-safe to share."""
    global _client
    import docker

    with _client_lock:
        if _client is None:
            _client = docker.from_env(version="auto", timeout=120)
        return _client


def remove(container: Any) -> None:
    import docker
    import requests

    # Best effort: an engine that is away (restarting) leaves it to the next reaper.
    with contextlib.suppress(docker.errors.DockerException, OSError,
                             requests.exceptions.RequestException):
        container.remove(force=True)


def prefect_api_url() -> str:
    """The Prefect API this process reports to ("" when none is configured)."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value() or "")


def leftovers(client: Any = None, scope: str | None = None) -> list[Any]:
    """FlowForge job containers on the engine, running or not, warm ones included; with
    `scope`, only those created by runs (or pools) of that Prefect API."""
    client = client or docker_client()
    found: dict[str, Any] = {}
    for label in (LABEL_RUN, LABEL_WARM):
        labels = [label] if scope is None else [label, f"{LABEL_PREFECT}={scope}"]
        # ignore_removed: docker-py inspects each listed container; one removed in between (a
        # run ending, another reaper) raised NotFound and failed the whole listing (seen in CI).
        for container in client.containers.list(all=True, filters={"label": labels},
                                                ignore_removed=True):
            found[container.id] = container
    return list(found.values())


def reap(is_finished: Callable[[str], bool], client: Any = None, keep: Iterable[str] = (),
         scope: str | None = None) -> list[str]:
    """Remove the job containers of runs that are over; returns their names.

    `is_finished(run_id)` decides (True also for runs Prefect does not know); run ids in
    `keep` are never touched (the calling run's own); `scope` as for `leftovers`. A warm
    container nobody claimed goes when the pool that made it is gone (a live pool's are its
    own, not leftovers, whatever `is_finished` says).
    """
    keep_ids = set(keep)
    removed = []
    verdicts: dict[str, bool] = {}
    for container in leftovers(client, scope):
        run_id = warm_containers.run_of(container, LABEL_RUN)
        if run_id is None:
            if warm_containers.owner_alive(container.labels.get(LABEL_OWNER, "")):
                continue
        elif run_id in keep_ids:
            continue
        else:
            if run_id not in verdicts:
                verdicts[run_id] = is_finished(run_id)
            if not verdicts[run_id]:
                continue
        remove(container)
        warm_dir = container.labels.get(LABEL_DIR)
        if warm_dir and Path(warm_dir).name.startswith("flowforge-warm-"):
            shutil.rmtree(warm_dir, ignore_errors=True)
        removed.append(container.name)
    return removed


def reap_in_background(keep: str) -> threading.Thread:
    """Start a reaper that does not hold up the flow run starting it; errors are ignored."""
    def go() -> None:
        with contextlib.suppress(Exception):
            reap(run_finished, keep=[keep], scope=prefect_api_url())

    thread = threading.Thread(target=go, name="flowforge-container-reaper", daemon=True)
    thread.start()
    return thread


__all__ = [
    "LABEL_JOB",
    "LABEL_PREFECT",
    "LABEL_RUN",
    "LABEL_WORKFLOW",
    "docker_client",
    "leftovers",
    "prefect_api_url",
    "reap",
    "reap_in_background",
    "remove",
]
