"""The container executor: a script job in a fresh, hardened Docker container (Docker SDK).

The job speaks the same `workdir` protocol as locally: its directory is prepared on the host
and bind-mounted at `/job`, the only host path the container sees, and the helpers inside it
work unchanged. Everything else defaults to locked down: no network, read-only root with a
tmpfs `/tmp`, every capability dropped, `no-new-privileges`, a non-root user, memory and pids
limits, and an environment of only the job's own variables plus the helper ones (nothing of
the flow run's `PREFECT_*` / `FLOWFORGE_*` settings). Each container carries the labels
`flowforge.workflow`, `flowforge.run-id` and `flowforge.job`, which is what the reaper (and
`flowforge gc`) look for when a worker died before it could remove its containers.

Docker SDK calls block; they run in the job's task thread, which has nothing else to do,
and output is read by one more thread so the Prefect log gets lines as they come.

What a killed worker leaves is reaped by `ContainerExecutor.reap` (`flowforge gc` and
`flowforge up` call it through the executor registry), and in the background by every run
that has container jobs (`start_run`).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Final

from flowforge.core.images import runner_image_name
from flowforge.core.targets import ContainerTarget, TargetBase
from flowforge.core.targets.container import ISOLATION
from flowforge.runtime.executors import processes, workdir
from flowforge.runtime.executors.base import (
    Executor,
    LogFn,
    RunInfo,
    ScriptRequest,
    ScriptResult,
    failure,
)
from flowforge.runtime.executors.local import (
    DRAIN_SECONDS,
    LocalExecutor,
    exit_error,
    job_environment,
)
from flowforge.runtime.executors.streams import PROGRESS_LINE, STDERR_TAIL_LINES, Lines
from flowforge.runtime.prefect_client import run_finished

LABEL_WORKFLOW: Final = "flowforge.workflow"
LABEL_RUN: Final = "flowforge.run-id"
LABEL_JOB: Final = "flowforge.job"
#: The Prefect API the creating run reported to: a reaper only judges runs of its own Prefect,
#: so two FlowForge installations sharing one engine never remove each other's containers.
LABEL_PREFECT: Final = "flowforge.prefect-api"
MOUNT: Final = "/job"
TMPFS: Final = "rw,nosuid,nodev,size=64m"
_client_lock = threading.Lock()
_client: Any = None
_live_lock = threading.Lock()
_live: dict[str, Any] = {}  # container id -> Container, for stop_all()


def docker_client() -> Any:
    """One Docker client per process (DOCKER_HOST, like the docker CLI); thread-safe to share."""
    global _client
    import docker

    with _client_lock:
        if _client is None:
            _client = docker.from_env(version="auto", timeout=120)
        return _client


def stop_all() -> None:
    """Remove every container this process still runs (the run was cancelled, or we exit)."""
    with _live_lock:
        containers = list(_live.values())
        _live.clear()
    threads = [threading.Thread(target=_remove, args=(c,), daemon=True) for c in containers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=15)


def _remove(container: Any) -> None:
    import docker

    with contextlib.suppress(docker.errors.NotFound, docker.errors.APIError):
        container.remove(force=True)


class ContainerExecutor(Executor):
    """Runs script jobs in containers. Holds no run state, so one may serve many threads."""

    kind = "container"

    def __init__(self, *, kill_grace: float = 3.0, keep_dirs: bool = False,
                 client: Any = None, work_root: Path | None = None) -> None:
        self.kill_grace = kill_grace
        self.keep_dirs = keep_dirs
        self.work_root = work_root
        self._client = client

    @classmethod
    def for_run(cls, run: RunInfo) -> ContainerExecutor:
        return cls(work_root=run.settings.job_root)

    @classmethod
    def start_run(cls, run: RunInfo) -> None:
        # A worker killed mid-job leaves its containers behind; the next run cleans up.
        reap_in_background(keep=run.flow_run_id)

    @classmethod
    def reap(cls, is_finished: Callable[[str], bool], scope: str | None = None) -> list[str]:
        return reap(is_finished, scope=scope)

    def kill_all(self, grace: float = 2.0) -> None:
        stop_all()

    def run(self, job: ScriptRequest, log: LogFn,
            target: TargetBase | None = None) -> ScriptResult:
        """Run `job` in a fresh container made with `target`'s options (defaults: hardened)."""
        options = target if isinstance(target, ContainerTarget) else ContainerTarget()
        started = time.monotonic()
        if job.timeout is not None and job.timeout <= 0:
            return failure(f"timeout must be positive, got {job.timeout}", started)
        if job.work_root is None and self.work_root is not None:
            job.work_root = self.work_root
        try:
            parent = LocalExecutor.make_dir(job)
        except OSError as exc:
            return failure(f"could not create the job directory: {exc}", started)
        try:
            result = self._run_container(options, parent, job, log, started)
        except BaseException:
            if not self.keep_dirs:
                workdir.remove(parent)
            raise
        if self.keep_dirs:
            result.job_dir = parent
        else:
            workdir.remove(parent)
        return result

    def _run_container(self, o: ContainerTarget, parent: Path, job: ScriptRequest, log: LogFn,
                       started: float) -> ScriptResult:
        import docker

        # The container's user must write output.json into the job directory, so that is
        # open to all; its 0700 parent (the job's temp dir) keeps other users out.
        job_dir = parent / "job"
        timeouts = [t for t in (job.timeout, o.timeout) if t is not None]
        timeout = min(timeouts) if timeouts else None
        try:
            job_dir.mkdir()
            job_dir.chmod(0o777)
            script = workdir.prepare(job_dir, input=job.input, variables=job.variables,
                                     event=job.event, script=job.script, runtime=job.runtime)
            # A container inherits nothing from this process, only the target's env.
            env = {**job_environment(o.env, job, Path(MOUNT), None), "HOME": "/tmp"}
        except (OSError, ValueError) as exc:
            return failure(str(exc), started)
        argv = workdir.command_for(job.runtime, f"{MOUNT}/{script.name}", python="python3")
        image = o.image or runner_image_name()
        try:
            client = self._client or docker_client()
            container = client.containers.create(image, argv,
                                                 **self._create_options(o, job, env, job_dir))
        except docker.errors.ImageNotFound:
            return failure(f"image '{image}' is not in the Docker engine (`flowforge image "
                           "build` builds the runner image; nothing is pulled)", started)
        except docker.errors.DockerException as exc:
            return failure(f"could not create the container: {exc}", started)
        with _live_lock:
            _live[container.id] = container
        processes.on_kill_all(stop_all)
        try:
            return self._supervise_container(o, container, timeout, log, job_dir, started)
        finally:
            with _live_lock:
                _live.pop(container.id, None)
            _remove(container)

    @staticmethod
    def _create_options(o: ContainerTarget, job: ScriptRequest, env: dict[str, str],
                        job_dir: Path) -> dict[str, Any]:
        event = job.event if isinstance(job.event, dict) else json.loads(job.event)
        options: dict[str, Any] = {
            "environment": env,
            "labels": {LABEL_WORKFLOW: str(event.get("workflow", "")),
                       LABEL_RUN: str(event.get("run_id", "")),
                       LABEL_JOB: job.name,
                       LABEL_PREFECT: prefect_api_url()},
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

    def _supervise_container(self, o: ContainerTarget, container: Any, timeout: float | None,
                             log: LogFn, job_dir: Path, started: float) -> ScriptResult:
        import docker
        import requests

        tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        try:
            stream = container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
            container.start()
        except docker.errors.DockerException as exc:
            return ScriptResult(exit_code=None, error=f"could not start the container: {exc}",
                                duration=time.monotonic() - started)
        reader = threading.Thread(target=_pump, args=(stream, log, tail), daemon=True,
                                  name="flowforge-container-logs")
        reader.start()
        timed_out = False
        status: dict[str, Any] = {}
        try:
            status = container.wait(timeout=timeout)
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError):
            timed_out = True
        except docker.errors.DockerException:  # removed under us: the run is being cancelled
            pass
        if timed_out:
            with contextlib.suppress(docker.errors.DockerException):
                container.stop(timeout=int(self.kill_grace))
        reader.join(DRAIN_SECONDS)
        state: dict[str, Any] = {}
        with contextlib.suppress(docker.errors.DockerException):
            container.reload()
            state = container.attrs.get("State", {})
        code = state.get("ExitCode", status.get("StatusCode"))
        artifacts = workdir.collect(job_dir)
        if timed_out:
            error: str | None = f"timed out after {timeout:g}s"
        elif state.get("OOMKilled"):
            error = f"killed: out of memory (limit {o.memory})"
        elif not state:
            error = "the container was removed before the job finished"
        else:
            error = exit_error(code, False, timeout, tail, artifacts.error)
        return ScriptResult(
            exit_code=code,
            output=artifacts.output,
            condition=artifacts.condition,
            variables_set=artifacts.variables_set,
            progress=artifacts.progress,
            error=error,
            timed_out=timed_out,
            duration=time.monotonic() - started,
        )


def _pump(stream: Iterable[tuple[bytes | None, bytes | None]], log: LogFn, tail: deque[str]) -> None:
    """Hand the container's output to `log` line by line until the stream ends."""
    lines = {"stdout": Lines("stdout"), "stderr": Lines("stderr")}

    def emit(name: str, new: list[str]) -> None:
        for line in new:
            if name == "stderr" and not PROGRESS_LINE.match(line):
                tail.append(line)
            log(name, line)

    with contextlib.suppress(Exception):  # a broken stream only ends the live log
        for out, err in stream:
            if out:
                emit("stdout", lines["stdout"].feed(out))
            if err:
                emit("stderr", lines["stderr"].feed(err))
    for name, splitter in lines.items():
        emit(name, splitter.flush())


# -- leftovers ----------------------------------------------------------------------------------


def prefect_api_url() -> str:
    """The Prefect API this process reports to ("" when none is configured)."""
    from prefect.settings import PREFECT_API_URL

    return str(PREFECT_API_URL.value() or "")


def leftovers(client: Any = None, scope: str | None = None) -> list[Any]:
    """FlowForge job containers on the engine, running or not; with `scope`, only those
    created by runs of that Prefect API."""
    client = client or docker_client()
    labels = [LABEL_RUN] if scope is None else [LABEL_RUN, f"{LABEL_PREFECT}={scope}"]
    # ignore_removed: docker-py inspects each listed container; one removed in between (a run
    # ending, another reaper) raised NotFound and failed the whole listing (seen in CI).
    return list(client.containers.list(all=True, filters={"label": labels}, ignore_removed=True))


def reap(is_finished: Callable[[str], bool], client: Any = None, keep: Iterable[str] = (),
         scope: str | None = None) -> list[str]:
    """Remove the job containers of runs that are over; returns their names.

    `is_finished(run_id)` decides (True also for runs Prefect does not know); run ids in
    `keep` are never touched (the calling run's own); `scope` as for `leftovers`.
    """
    keep_ids = set(keep)
    removed = []
    verdicts: dict[str, bool] = {}
    for container in leftovers(client, scope):
        run_id = container.labels.get(LABEL_RUN, "")
        if run_id in keep_ids:
            continue
        if run_id not in verdicts:
            verdicts[run_id] = is_finished(run_id)
        if verdicts[run_id]:
            _remove(container)
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
    "MOUNT",
    "ContainerExecutor",
    "docker_client",
    "leftovers",
    "prefect_api_url",
    "reap",
    "reap_in_background",
    "stop_all",
]
