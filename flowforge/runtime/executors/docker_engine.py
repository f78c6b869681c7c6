"""The Docker engine as job containers see it: one client per process, what every job
container is created with (hardening, labels), what the engine says of one that ended, and the
leftovers a killed worker, run or pool leaves there.

Every job container carries `flowforge.workflow`, `flowforge.run-id` and `flowforge.job`
(a warm one, made before its job, carries `warm_containers`' labels instead and names its run
in a claim file), and `flowforge.prefect-api`: a reaper only judges runs of its own Prefect, so
two FlowForge installations sharing one engine never remove each other's containers.
`flowforge gc`, `flowforge up` and every run with container jobs reap through `reap`.
"""

from __future__ import annotations

import contextlib
import shutil
import signal
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from flowforge.core.targets import ContainerTarget
from flowforge.core.targets.container import ISOLATION
from flowforge.runtime.executors import warm_containers
from flowforge.runtime.executors.warm_containers import LABEL_DIR, LABEL_OWNER, LABEL_WARM, MOUNT
from flowforge.runtime.prefect_client import run_finished

LABEL_WORKFLOW: Final = "flowforge.workflow"
LABEL_RUN: Final = "flowforge.run-id"
LABEL_JOB: Final = "flowforge.job"
#: The Prefect API the creating run reported to: a reaper only judges runs of its own Prefect,
#: so two FlowForge installations sharing one engine never remove each other's containers.
LABEL_PREFECT: Final = "flowforge.prefect-api"
TMPFS: Final = "rw,nosuid,nodev,size=64m"
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


def create_options(o: ContainerTarget, env: dict[str, str], labels: dict[str, str],
                   job_dir: Path) -> dict[str, Any]:
    """docker-py create options of a job container, cold or warm: the target's hardening."""
    options: dict[str, Any] = {
        "environment": env,
        "labels": labels,
        "user": o.user,
        "working_dir": o.workdir or MOUNT,
        "network_mode": o.network,
        **ISOLATION,
        "read_only": o.read_only,
        "tmpfs": {"/tmp": TMPFS},
        "mem_limit": o.memory,
        "memswap_limit": o.memory,  # no swap: the limit is the limit
        "pids_limit": o.pids_limit,
        "volumes": {str(job_dir): {"bind": MOUNT, "mode": "rw"}},
        "stdin_open": False,
        "tty": False,
    }
    if o.cpus is not None:
        options["nano_cpus"] = int(o.cpus * 1e9)
    return options


#: Exit codes of a container's main process killed by SIGTERM or SIGKILL (128 + signal).
SIGNALLED: Final = {128 + signal.SIGTERM, 128 + signal.SIGKILL}


def signalled_by(container: Any, since: float) -> tuple[str | None, str | None]:
    """Whether the engine sent the container a signal since `since` (its `kill` events): (None,
    the signal's name), or (why, None) if the engine no longer answers, or (None, None)."""
    import requests

    try:
        events = container.client.events(
            since=f"{since:.6f}", until=f"{time.time():.6f}", decode=True,
            filters={"container": container.id, "event": "kill"})
        for event in events:
            number = event.get("Actor", {}).get("Attributes", {}).get("signal", "")
            try:
                return None, signal.Signals(int(number)).name
            except ValueError:
                return None, f"signal {number}"
    except requests.exceptions.ConnectionError as exc:
        return str(exc), None
    except Exception:  # the SDK's own: no verdict
        return None, None
    return None, None


def inspect_state(container: Any, seconds: float) -> tuple[dict[str, Any] | None, bool]:
    """The container's `State` ({} once it is removed) and whether the engine was away; None
    if it did not answer again within `seconds` (a restart takes a few)."""
    import docker
    import requests

    deadline = time.monotonic() + seconds
    away = False
    while True:
        try:
            container.reload()
            return dict(container.attrs.get("State", {})), away
        except docker.errors.NotFound:
            return {}, away
        except (requests.exceptions.ConnectionError, docker.errors.APIError):
            away = True  # refused, or answering 5xx while it starts
            if time.monotonic() >= deadline:
                return None, away
            time.sleep(0.5)
        except docker.errors.DockerException:
            return {}, away


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
    "SIGNALLED",
    "TMPFS",
    "create_options",
    "docker_client",
    "inspect_state",
    "leftovers",
    "prefect_api_url",
    "reap",
    "reap_in_background",
    "remove",
    "signalled_by",
]
