"""The local executor: a script job as a subprocess of this process.

The job gets a fresh temporary directory (the `workdir` protocol), its own session and process
group, and an environment without the flow run's `PREFECT_*` / `FLOWFORGE_*` variables, so an
API key that lets the worker talk to Prefect never reaches user code. It runs as the job user
(`jobuser`: `nobody` under a root worker), so neither can it read them from /proc. Its stdout and stderr are
read as they come and handed to `log` line by line, so the Prefect UI shows a long job's
progress while it runs. On timeout the whole group gets SIGTERM, then SIGKILL after a grace
period; when the main process ends, whatever it left running in its group is killed too, so a
`cmd &` in a script cannot outlive its job.

A flow run does not use it directly: the local target's executor is the launcher
(`executors.launcher`), which runs this executor's steps in a process of its own.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import selectors
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import TYPE_CHECKING, Final

from flowforge.runtime.executors import jobuser, processes, workdir
from flowforge.runtime.executors.base import (
    Executor,
    LogFn,
    ScriptRequest,
    ScriptResult,
    failure,
    inherited_env,
)
from flowforge.runtime.executors.jobuser import JobUser
from flowforge.runtime.executors.streams import Output

if TYPE_CHECKING:
    from flowforge.core.targets import TargetBase

#: How long to keep reading after the job's group is gone; only a grandchild that escaped into
#: its own session can still hold the pipes open, and it must not hang the flow run.
DRAIN_SECONDS: Final = 2.0


_DEVNULL: list[int] = []
_DEVNULL_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _job_python() -> str:
    """FLOWFORGE_JOB_PYTHON, read once per process: settings are read from the environment on
    each construction, which cost every job about 3 ms under a job user (docs/performance.md)."""
    from flowforge.runtime.settings import WorkerSettings

    return WorkerSettings().job_python or "python3"


def _devnull() -> int:
    """One read-only /dev/null descriptor for every job's stdin, instead of an open and a close
    per job (`subprocess.DEVNULL`); close-on-exec, so only the child's dup of it is inherited."""
    with _DEVNULL_LOCK:
        if not _DEVNULL:
            _DEVNULL.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        return _DEVNULL[0]


def _close(*fds: int) -> None:
    for fd in fds:
        with contextlib.suppress(OSError):
            os.close(fd)


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:40] or "job"


@dataclass
class Spawned:
    """A started job: its process (its own session and group) and its pipes' read ends."""

    proc: subprocess.Popen[bytes]
    stdout: int
    stderr: int


def exit_error(code: int | None, timed_out: bool, timeout: float | None, tail: deque[str],
               artifacts_error: str | None) -> str | None:
    """The error message of a job that ended this way, or None if it succeeded."""
    if timed_out:
        return f"timed out after {timeout:g}s"
    if code is not None and code < 0:
        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        return f"killed by {name}" + (": " + "\n".join(tail) if tail else "")
    if code:
        return f"exit code {code}: " + "\n".join(tail) if tail else f"exit code {code}"
    return artifacts_error


def job_environment(base: Mapping[str, str], job: ScriptRequest, job_dir: PurePath,
                    helpers_dir: Path | None) -> dict[str, str]:
    """Inherited env minus Prefect/FlowForge settings, then the job's env, then the helpers.

    `job_dir` is the directory as the script sees it; `helpers_dir` None means the copies in
    it. The helper variables go last so a job cannot point the helpers somewhere else; its own
    PYTHONPATH / NODE_PATH are kept after the helpers directory. ValueError for a bad name.
    """
    env = inherited_env(base)
    for key, value in job.env.items():
        if not isinstance(key, str) or not key or "=" in key or "\0" in key:
            raise ValueError(f"job env: invalid variable name {key!r}")
        if not isinstance(value, str) or "\0" in value:
            raise ValueError(f"job env: {key} must be a string without NUL characters")
        env[key] = value
    helpers = workdir.helper_env(job_dir, helpers_dir)
    for key in ("NODE_PATH", "PYTHONPATH"):
        if env.get(key):
            helpers[key] = helpers[key] + os.pathsep + env[key]
    env.update(helpers)
    return env


class LocalExecutor(Executor):
    """Runs script jobs on this machine. Safe to share between threads (it holds no run state).

    `run` is one job from start to end on the calling thread. Its steps (`make_dir`, `spawn`,
    `finish`, `close_dir`) are public for a supervisor that watches many jobs from one thread
    (the launcher), so a job is prepared, started and collected the same way by both.
    """

    #: Where the job's script finds the helpers: the installed ones, since a local script sees
    #: this filesystem; None means the copies `workdir.prepare` puts in the job directory.
    helpers_dir: Path | None = workdir.HELPERS_SOURCE
    kind = "local"

    def kill_all(self, grace: float = 2.0) -> None:
        processes.kill_groups(grace)

    def __init__(self, *, keep_dirs: bool = False, kill_grace: float = 3.0, python: str | None = None,
                 base_env: Mapping[str, str] | None = None,
                 user: JobUser | str | None = "configured") -> None:
        """`base_env` is the environment jobs inherit (filtered); None means this process's own,
        read at each run. `python` overrides the interpreter (default: `sys.executable`).
        `user`: who jobs run as; "configured" reads FLOWFORGE_JOB_USER (`jobuser.configured`),
        None is this process's own user."""
        self.keep_dirs = keep_dirs
        self.kill_grace = kill_grace
        self.python = python
        self.base_env = base_env
        self._user = user

    @property
    def user(self) -> JobUser | None:
        if isinstance(self._user, str):
            self._user = jobuser.configured()
        return self._user

    def _interpreter(self, user: JobUser | None) -> str | None:
        """The python a job runs with: ours, unless the job user cannot reach it."""
        if self.python is not None or user is None or user.can_reach(sys.executable, os.X_OK):
            return self.python
        return _job_python()

    def run(self, job: ScriptRequest, log: LogFn, target: TargetBase | None = None) -> ScriptResult:
        """Run `job` to the end, calling `log(stream, line)` for each output line as it comes."""
        started = time.monotonic()
        try:
            job_dir = self.make_dir(job)
        except OSError as exc:
            return failure(f"could not create the job directory: {exc}", started)
        try:
            result, listing = self._run_in(job_dir, job, log, started)
        except BaseException:  # interrupted, or `log` raised: the directory still goes
            if not self.keep_dirs:
                workdir.remove(job_dir)
            raise
        return self.close_dir(job_dir, result, listing)

    @staticmethod
    def make_dir(job: ScriptRequest) -> Path:
        """A new, empty job directory (under `job.work_root` if set); raises OSError."""
        if job.work_root is not None:
            job.work_root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f"flowforge-{_slug(job.name)}-", dir=job.work_root))

    def close_dir(self, job_dir: Path, result: ScriptResult, listing: list[str] | None) -> ScriptResult:
        """Remove the job directory (`listing`: its names, when known), or keep it and say so."""
        if self.keep_dirs:
            result.job_dir = job_dir
        else:
            workdir.remove(job_dir, listing)
        return result

    def _run_in(self, job_dir: Path, job: ScriptRequest, log: LogFn,
                started: float) -> tuple[ScriptResult, list[str] | None]:
        """The job's result and the job directory's listing after it ran (None if it did not)."""
        spawned = self.spawn(job_dir, job)
        if isinstance(spawned, str):
            return failure(spawned, started), None
        proc = spawned.proc
        supervised = False
        try:
            timed_out, tail = self._supervise(spawned, job.timeout, log)
            supervised = True  # the job and its group are gone
        finally:
            if not supervised:  # `log` raised or we were interrupted: the job must not outlive us
                if proc.poll() is None:
                    processes.signal_group(proc.pid, signal.SIGKILL)
                    proc.wait()
                processes.terminate_group(proc.pid, 0.0)
            processes.unregister(proc)
        return self.finish(job_dir, proc.returncode, timed_out, tail, job.timeout, started)

    def spawn(self, job_dir: Path, job: ScriptRequest) -> Spawned | str:
        """Fill `job_dir` and start the job in it (tracked by `processes`); or why it could not."""
        if job.timeout is not None and job.timeout <= 0:
            return f"timeout must be positive, got {job.timeout}"
        user = self.user
        helpers_dir = self.helpers_dir
        if user is not None and helpers_dir is not None and not user.can_reach(helpers_dir):
            helpers_dir = None  # a virtualenv the job user cannot read: copies in its directory
        if user is not None and not user.can_reach(job_dir.parent, os.X_OK):
            return (f"the job user {user.name} cannot reach the job directory's parent "
                    f"{job_dir.parent} (FLOWFORGE_JOB_ROOT must be searchable by it)")
        try:
            script_path = workdir.prepare(job_dir, input=job.input, variables=job.variables,
                                          event=job.event, script=job.script, runtime=job.runtime,
                                          helpers=helpers_dir is None)
            argv = workdir.command_for(job.runtime, script_path, python=self._interpreter(user))
            env = self._environment(job, job_dir, helpers_dir)
            if user is not None:
                jobuser.hand_over(job_dir, user)
                for key, value in (("HOME", str(job_dir)), ("USER", user.name),
                                   ("LOGNAME", user.name)):
                    if key not in job.env:
                        env[key] = value
        except ValueError as exc:
            return str(exc)
        except OSError as exc:
            return f"could not prepare the job directory: {exc}"
        # Raw pipe ends rather than `PIPE`: Popen would wrap each in a file object (three more
        # system calls apiece) that the supervisor does not use.
        out_read, out_write = os.pipe()
        err_read, err_write = os.pipe()
        try:
            proc = subprocess.Popen(
                argv, cwd=job_dir, env=env, stdin=_devnull(), stdout=out_write, stderr=err_write,
                start_new_session=True, user=None if user is None else user.uid,
                group=None if user is None else user.gid,
                extra_groups=None if user is None else [])
        except FileNotFoundError:
            _close(out_read, err_read)
            return (f"cannot run a {job.runtime} job: '{argv[0]}' was not found on this machine "
                    f"(PATH={env.get('PATH', '')})")
        except (OSError, ValueError) as exc:
            _close(out_read, err_read)
            return f"cannot start '{argv[0]}': {exc}"
        finally:
            _close(out_write, err_write)
        processes.register(proc)
        return Spawned(proc, out_read, err_read)

    def finish(self, job_dir: Path, exit_code: int | None, timed_out: bool, tail: deque[str],
               timeout: float | None, started: float) -> tuple[ScriptResult, list[str] | None]:
        """The result of a job whose process group is gone, with the job directory's names."""
        listing = workdir.listing(job_dir)
        artifacts = workdir.collect(job_dir, listing)
        return ScriptResult(
            exit_code=exit_code,
            output=artifacts.output,
            condition=artifacts.condition,
            variables_set=artifacts.variables_set,
            progress=artifacts.progress,
            error=exit_error(exit_code, timed_out, timeout, tail, artifacts.error),
            timed_out=timed_out,
            duration=time.monotonic() - started,
        ), listing

    def _environment(self, job: ScriptRequest, job_dir: Path,
                     helpers_dir: Path | None) -> dict[str, str]:
        base = os.environ if self.base_env is None else self.base_env
        return job_environment(base, job, job_dir, helpers_dir)

    def _supervise(self, spawned: Spawned, timeout: float | None,
                   log: LogFn) -> tuple[bool, deque[str]]:
        """Stream output until the job and its group are gone; returns (timed_out, stderr tail).

        Owns the pipes' read ends and closes them."""
        proc = spawned.proc
        output = Output(spawned.stdout, spawned.stderr, log)
        # poll(2), not epoll: nothing to create or register in the kernel for two pipes, so
        # fewer system calls per job (see `workdir._write` for why those count). A pipe is only
        # read once poll says it is readable, so it can stay blocking.
        selector = selectors.PollSelector()
        for fd in output.pipes:
            selector.register(fd, selectors.EVENT_READ)

        def pump(wait: float | None) -> None:
            """Read what is there, for up to `wait` seconds (None: no deadline to watch)."""
            if not selector.get_map():
                # Both pipes are closed, usually because the job is exiting: return the moment
                # it has (a plain sleep here added up to 0.1 s to most jobs). Without a deadline
                # to watch, one blocking wait; a stopping run kills the group, which ends it.
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(wait)
                return
            # While a pipe is open, wake at least every 0.1 s to see whether the main process
            # ended while something it started still holds the pipe.
            for key, _ in selector.select(0.1 if wait is None else min(0.1, wait)):
                if not output.read(key.fd):
                    selector.unregister(key.fd)

        deadline = None if timeout is None else time.monotonic() + timeout
        kill_at: float | None = None
        timed_out = False
        try:
            while proc.poll() is None:
                now = time.monotonic()
                if deadline is not None and not timed_out and now >= deadline:
                    timed_out = True
                    processes.signal_group(proc.pid, signal.SIGTERM)
                    kill_at = now + self.kill_grace
                if kill_at is not None and now >= kill_at:
                    processes.signal_group(proc.pid, signal.SIGKILL)
                    kill_at = None
                next_event = kill_at if timed_out else deadline
                pump(None if next_event is None else max(0.0, next_event - now))
            # The main process is done; anything it left in its group goes now (within the
            # grace still owed after a timeout), so the pipes close and the job really ends.
            grace = self.kill_grace if not timed_out else max(0.0, (kill_at or 0.0) - time.monotonic())
            processes.terminate_group(proc.pid, grace)
            drain_until = time.monotonic() + DRAIN_SECONDS
            while selector.get_map() and time.monotonic() < drain_until:
                pump(0.1)
            output.flush()
        finally:
            selector.close()
            _close(*output.pipes)
        return timed_out, output.tail


__all__ = ["DRAIN_SECONDS", "LocalExecutor", "Spawned", "exit_error", "job_environment"]
