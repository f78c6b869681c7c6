"""The container executor: a script job in a fresh, hardened Docker container (Docker SDK).

The job speaks the same `workdir` protocol as locally: its directory is prepared on the host
and bind-mounted at `/job`, the only host path the container sees, and the helpers inside it
work unchanged. Everything else defaults to locked down: no network, read-only root with a
tmpfs `/tmp`, every capability dropped, `no-new-privileges`, a non-root user, memory and pids
limits, and an environment of only the job's own variables plus the helper ones (nothing of
the flow run's `PREFECT_*` / `FLOWFORGE_*` settings). Each container carries the labels
`docker_engine` names, which is what the reaper (and `flowforge gc`) look for when a worker
died before it could remove its containers.

Docker SDK calls block; they run in the job's task thread, which has nothing else to do,
and output is read by one more thread so the Prefect log gets lines as they come.

A container comes from the worker's pool of pre-warmed ones when the flow run has one
(`FLOWFORGE_CONTAINER_POOL`, set by the warm runner; `warm_containers`): same options, same
`/job` directory, the job `exec`ed in place of a waiting process instead of created and
started, removed after that one job. Without a pool, or with none ready, it is created.

What a killed worker leaves is reaped by `ContainerExecutor.reap` (`flowforge gc` and
`flowforge up` call it through the executor registry), and in the background by every run
that has container jobs (`start_run`): job containers of runs that are over, and warm
containers whose pool is gone.
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
from flowforge.runtime.executors import processes, warm_containers, workdir
from flowforge.runtime.executors.base import (
    Executor,
    LogFn,
    RunInfo,
    ScriptRequest,
    ScriptResult,
    failure,
)
from flowforge.runtime.executors.docker_engine import (
    LABEL_JOB,
    LABEL_PREFECT,
    LABEL_RUN,
    LABEL_WORKFLOW,
    SIGNALLED,
    create_options,
    docker_client,
    inspect_state,
    leftovers,
    prefect_api_url,
    reap,
    reap_in_background,
    signalled_by,
)
from flowforge.runtime.executors.docker_engine import remove as _remove
from flowforge.runtime.executors.local import (
    DRAIN_SECONDS,
    LocalExecutor,
    exit_error,
    job_environment,
)
from flowforge.runtime.executors.streams import PROGRESS_LINE, STDERR_TAIL_LINES, Lines
from flowforge.runtime.executors.warm_containers import MOUNT

#: How long a job whose engine went away (a dockerd restart) waits for it to answer again, to
#: read how its container ended and remove it.
ENGINE_RETURN_SECONDS: Final = 30.0
_live_lock = threading.Lock()
_live: dict[str, Any] = {}  # container id -> Container, for stop_all()


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


class ContainerExecutor(Executor):
    """Runs script jobs in containers. Holds no run state, so one may serve many threads."""

    kind = "container"

    def __init__(self, *, kill_grace: float = 3.0, keep_dirs: bool = False,
                 client: Any = None, work_root: Path | None = None,
                 pool: Path | None = None) -> None:
        """`pool`: the Unix socket of a pool of pre-warmed containers to claim from first."""
        self.kill_grace = kill_grace
        self.keep_dirs = keep_dirs
        self.work_root = work_root
        self.pool = pool
        self._client = client

    @classmethod
    def for_run(cls, run: RunInfo) -> ContainerExecutor:
        return cls(work_root=run.settings.job_root, pool=run.settings.container_pool)

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
        claimed = self._claim(options, job)
        try:
            parent = claimed.parent if claimed else LocalExecutor.make_dir(job)
        except OSError as exc:
            return failure(f"could not create the job directory: {exc}", started)
        try:
            result = self._run_container(options, parent, job, log, started, claimed)
            if result is None:  # the warm container was gone: make one after all
                workdir.remove(parent)
                parent = LocalExecutor.make_dir(job)
                result = self._run_container(options, parent, job, log, started, None)
                assert result is not None
        except BaseException:
            if not self.keep_dirs:
                workdir.remove(parent)
            raise
        if self.keep_dirs:
            result.job_dir = parent
        else:
            workdir.remove(parent)
        return result

    def _claim(self, options: ContainerTarget, job: ScriptRequest) -> warm_containers.Claimed | None:
        if self.pool is None or self._client is not None:  # a given client: not the pool's engine
            return None
        try:  # the client first: the claimed container is held (a cancel finds it) at once
            client = docker_client()
        except Exception:  # the SDK's own: the job reports the engine as it goes on
            return None
        event = job.event if isinstance(job.event, dict) else json.loads(job.event)
        claimed = warm_containers.claim(self.pool, options, str(event.get("run_id", "")))
        if claimed is not None:
            self._hold(client.containers.prepare_model({"Id": claimed.id}))
        return claimed

    def _run_container(self, o: ContainerTarget, parent: Path, job: ScriptRequest, log: LogFn,
                       started: float, claimed: warm_containers.Claimed | None,
                       ) -> ScriptResult | None:
        """The job in a new container, or in `claimed` (None: that one was gone, nothing ran)."""
        import docker

        # The container's user must write output.json into the job directory, so that is
        # open to all; its 0700 parent (the job's temp dir) keeps other users out.
        job_dir = parent / "job"
        timeouts = [t for t in (job.timeout, o.timeout) if t is not None]
        timeout = min(timeouts) if timeouts else None
        try:
            client = self._client or docker_client()
        except docker.errors.DockerException as exc:  # a claimed one is reaped with its run
            return failure(f"the Docker engine is not reachable: {exc}", started)
        container: Any = None
        if claimed is not None:  # ours from now on: a cancel must find it
            container = client.containers.prepare_model({"Id": claimed.id})
            self._hold(container)
        try:
            try:
                if claimed is None:
                    job_dir.mkdir()
                    job_dir.chmod(0o777)
                script = workdir.prepare(job_dir, input=job.input, variables=job.variables,
                                         event=job.event, script=job.script, runtime=job.runtime)
                # A container inherits nothing from this process, only the target's env.
                env = {**job_environment(o.env, job, Path(MOUNT), None), "HOME": "/tmp"}
            except (OSError, ValueError) as exc:
                return failure(str(exc), started)
            argv = workdir.command_for(job.runtime, f"{MOUNT}/{script.name}", python="python3")
            if claimed is not None:
                return self._supervise_container(
                    o, container, timeout, log, job_dir, started,
                    lambda: warm_containers.start(claimed, argv, env), warm=True)
            image = o.image or runner_image_name()
            try:
                event = job.event if isinstance(job.event, dict) else json.loads(job.event)
                labels = {LABEL_WORKFLOW: str(event.get("workflow", "")),
                          LABEL_RUN: str(event.get("run_id", "")),
                          LABEL_JOB: job.name,
                          LABEL_PREFECT: prefect_api_url()}
                container = client.containers.create(image, argv,
                                                     **create_options(o, env, labels, job_dir))
            except docker.errors.ImageNotFound:
                return failure(f"image '{image}' is not in the Docker engine (`flowforge image "
                               "build` builds the runner image; nothing is pulled)", started)
            except docker.errors.DockerException as exc:
                return failure(f"could not create the container: {exc}", started)
            self._hold(container)
            return self._supervise_container(o, container, timeout, log, job_dir, started,
                                             container.start, warm=False)
        finally:
            if container is not None:
                with _live_lock:
                    _live.pop(container.id, None)
                _remove(container)

    @staticmethod
    def _hold(container: Any) -> None:
        """Count `container` among this process's, which a cancel (kill_all) removes."""
        with _live_lock:
            _live[container.id] = container
        processes.on_kill_all(stop_all)

    def _supervise_container(self, o: ContainerTarget, container: Any, timeout: float | None,
                             log: LogFn, job_dir: Path, started: float,
                             begin: Callable[[], Any], *, warm: bool) -> ScriptResult | None:
        """Attach, `begin` the job, follow it to its end. None when a warm container was not
        there to take the job (`begin` said False, or it was gone): nothing ran."""
        import docker
        import requests

        tail: deque[str] = deque(maxlen=STDERR_TAIL_LINES)
        try:
            stream = container.attach(stdout=True, stderr=True, stream=True, logs=True, demux=True)
            if begin() is False:
                with contextlib.suppress(Exception):
                    stream.close()
                return None
        except docker.errors.NotFound:
            if warm:
                return None
            return ScriptResult(exit_code=None, error="the container was removed before it started",
                                duration=time.monotonic() - started)
        except docker.errors.DockerException as exc:
            return ScriptResult(exit_code=None, error=f"could not start the container: {exc}",
                                duration=time.monotonic() - started)
        reader = threading.Thread(target=_pump, args=(stream, log, tail), daemon=True,
                                  name="flowforge-container-logs")
        reader.start()
        timed_out = False
        begun = time.time()
        lost: str | None = None  # the engine went away under the job (restarted, killed)
        status: dict[str, Any] = {}
        ends = None if timeout is None else time.monotonic() + timeout
        while True:
            try:
                status = container.wait(
                    timeout=None if ends is None else max(0.1, ends - time.monotonic()))
                break
            except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
                if ends is not None and time.monotonic() >= ends - 0.5:
                    timed_out = True
                    break
                lost = str(exc)
                if inspect_state(container, ENGINE_RETURN_SECONDS)[0] is None:
                    break  # still away: say so; a reaper removes the container later
            except docker.errors.DockerException:  # removed under us: the run is being cancelled
                break
        if timed_out:
            with contextlib.suppress(docker.errors.DockerException,
                                     requests.exceptions.RequestException):
                container.stop(timeout=int(self.kill_grace))
        reader.join(DRAIN_SECONDS)
        found, away = inspect_state(container, ENGINE_RETURN_SECONDS)
        if away and lost is None:  # stopped by the engine shutting down, then it went away
            lost = "it stopped answering"
        state: dict[str, Any] = found or {}
        code = state.get("ExitCode", status.get("StatusCode"))
        artifacts = workdir.collect(job_dir)
        if timed_out:
            error: str | None = f"timed out after {timeout:g}s"
        elif state.get("OOMKilled"):
            error = f"killed: out of memory (limit {o.memory})"
        elif lost is not None and not state:
            error = f"lost the Docker engine while the job ran ({lost})"
        elif not state:
            error = "the container was removed before the job finished"
        else:
            error = exit_error(code, False, timeout, tail, artifacts.error)
            if lost is None and code in SIGNALLED:  # a signal: who sent it?
                lost, signal_name = signalled_by(container, begun)
                if signal_name is not None:
                    error = (f"stopped from outside the job by {signal_name} (docker stop or "
                             f"kill, or the Docker engine shutting down); {error}")
            if lost is not None and error is not None:
                error = f"the Docker engine went away while the job ran; {error}"
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


__all__ = [
    "LABEL_JOB",
    "LABEL_PREFECT",
    "LABEL_RUN",
    "LABEL_WORKFLOW",
    "MOUNT",
    "ContainerExecutor",
    "create_options",
    "docker_client",
    "leftovers",
    "prefect_api_url",
    "reap",
    "reap_in_background",
    "stop_all",
]
