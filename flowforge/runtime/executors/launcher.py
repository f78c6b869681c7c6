"""The job launcher: local script jobs run from a small helper process, not the flow run's.

A flow-run process is GIL-bound while a large for-each runs: ten item threads and Prefect's
engine share one interpreter, and every system call an item makes lets go of the GIL and then
waits, often milliseconds, to get it back. Starting a job takes about 45 of them (make the
directory, write its files, pipes, fork, poll, collect, remove), which made a FlowForge item
three times slower than the bare `subprocess.run` of a hand-written Prefect task. So the flow
run hands the whole job to one launcher process per flow-run process instead: one write to send
the job, one wait for its result, and the launcher makes the system calls without anyone
else's bytecode to wait for.

The launcher prepares, starts and collects each job with the `LocalExecutor`'s own steps, so a
job behaves exactly as it did (own session and group, filtered environment, timeouts, grace
kills, streaming, cleanup), and supervises every job from one thread (`launcher_main`), so its
own work does not queue for the GIL either. It is started on first use, in its own session so a
terminal's Ctrl-C reaches the flow run and not it, and it ignores SIGINT; it kills every job it
runs when told to (`processes.kill_all` in the flow run) and when its stdin closes, which
happens when the flow-run process ends in any way, even by SIGKILL, so a job can no longer
outlive a killed flow run. The launcher tells the flow run each job's process group as it
starts it, so if the launcher itself dies, the flow run kills the jobs it left.

The protocol is one JSON object per line on the launcher's stdin and stdout:

    -> {"op": "run", "id": N, "job": {...}, "options": {...}}
    <- {"id": N, "group": pgid} {"id": N, "log": [stream, line]} ... {"id": N, "result": {...}}
    -> {"op": "kill", "id": N}                 (SIGKILL that job's group; its result follows)
    -> {"op": "kill_all", "id": N, "grace": s} <- {"id": N, "killed": true}

The job's input, event and variables travel already encoded as the text of their files, so a
for-each item's shared part (`workdir.EncodedJSON`) is still encoded once per job.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

import flowforge
from flowforge.runtime.executors import processes, workdir
from flowforge.runtime.executors.base import (
    LogFn,
    RunInfo,
    ScriptRequest,
    ScriptResult,
    inherited_env,
)
from flowforge.runtime.executors.local import LocalExecutor

if TYPE_CHECKING:
    from flowforge.core.targets import TargetBase

#: How long a caller whose log callback failed waits for the killed job's result.
_KILL_WAIT = 10.0
#: How often the launcher looks whether a group it signalled is gone (`processes.group_alive`
#: reads /proc: nothing to wait on), and whether a job exited where there are no pidfds.
_GROUP_POLL = 0.05
_EXIT_POLL = 0.05


class LauncherExecutor(LocalExecutor):
    """The local target's executor: the `LocalExecutor`, running its jobs in the launcher
    process rather than this one.

    Holds no run state, so one may serve many threads. The options are the `LocalExecutor`'s
    and apply in the launcher; `base_env=None` means this process's environment, read at each
    run.
    """

    @classmethod
    def start_run(cls, run: RunInfo) -> None:
        # Started now, its interpreter loads while Prefect creates the first task runs.
        with contextlib.suppress(OSError):  # the first job reports it if it cannot start
            Launcher.get()

    def kill_all(self, grace: float = 2.0) -> None:
        launcher = Launcher.current()
        if launcher is not None:
            launcher.kill_all(grace)

    def run(self, job: ScriptRequest, log: LogFn, target: TargetBase | None = None) -> ScriptResult:
        """Run `job` to the end, calling `log(stream, line)` for each output line as it comes."""
        started = time.monotonic()

        def failed(error: str) -> ScriptResult:
            return ScriptResult(exit_code=None, error=error, duration=time.monotonic() - started)

        try:
            request = self._request(job)
        except ValueError as exc:
            return failed(str(exc))
        try:
            launcher = Launcher.get()
        except OSError as exc:
            return failed(f"could not start the job launcher: {exc}")
        job_id, replies = launcher.submit(request, self._base_env())
        try:
            while True:
                reply = replies.get()
                if reply is None:
                    return failed(launcher.lost_reason())
                if "log" in reply:
                    log(*reply["log"])
                    continue
                return _result(reply["result"])
        except BaseException:
            launcher.kill(job_id, replies)  # the job must not outlive a failed caller
            raise
        finally:
            launcher.forget(job_id)

    def _base_env(self) -> dict[str, str]:
        # Filtered here as well as in the launcher, to keep Prefect's API key off the pipe.
        return inherited_env(os.environ if self.base_env is None else self.base_env)

    def _request(self, job: ScriptRequest) -> dict[str, Any]:
        """The job as plain data; raises ValueError for a value that is not JSON (or a job
        user that does not exist)."""
        user = self.user
        for key, value in job.env.items():  # the rest of the checks happen in the launcher
            if not isinstance(key, str) or not isinstance(value, str):
                raise ValueError(f"job env: {key!r} must be a string name with a string value")
        return {
            "op": "run",
            "job": {
                "name": job.name, "runtime": job.runtime, "script": job.script, "env": job.env,
                "input": workdir.encode(job.input, "input"),
                "event": workdir.encode(job.event, "event"),
                "variables": workdir.encode(job.variables, "variables") if job.variables else None,
                "timeout": job.timeout,
                "work_root": None if job.work_root is None else str(job.work_root),
            },
            "options": {"keep_dirs": self.keep_dirs, "kill_grace": self.kill_grace,
                        "python": self._interpreter(user),
                        "user": None if user is None else user.as_json()},
        }


def write_line(fd: int, message: dict[str, Any]) -> None:
    """One protocol message; the caller holds the lock that keeps messages whole."""
    write_all(fd, json.dumps(message, ensure_ascii=False) + "\n")


def write_all(fd: int, text: str) -> None:
    data = memoryview(text.encode("utf-8"))
    while data:
        data = data[os.write(fd, data):]


def _result(data: dict[str, Any]) -> ScriptResult:
    job_dir = data.pop("job_dir", None)
    return ScriptResult(**data, job_dir=None if job_dir is None else Path(job_dir))


class Launcher:
    """The flow-run side of one launcher process: sends jobs, routes replies to their callers."""

    _current: Launcher | None = None
    _lock = threading.Lock()

    @classmethod
    def current(cls) -> Launcher | None:
        """This process's launcher if one is running, without starting one."""
        with cls._lock:
            current = cls._current
        return None if current is None or current.lost or current.pid_of_owner != os.getpid() \
            else current

    @classmethod
    def get(cls) -> Launcher:
        """This process's launcher, started on first use and again if it has died."""
        with cls._lock:
            current = cls._current
            if current is None or current.lost or current.pid_of_owner != os.getpid():
                current = cls._current = cls()
            return current

    def __init__(self) -> None:
        # Nothing of Prefect's or FlowForge's settings: the launcher needs none, and what it
        # does not hold, no job can find in its /proc/<pid>/environ.
        env = inherited_env(os.environ)
        # The launcher must import this very copy of FlowForge, wherever the flow run found it.
        root = str(Path(flowforge.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowforge.runtime.executors.launcher_main"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._stdin = self.proc.stdin.fileno()
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, queue.SimpleQueue[dict[str, Any] | None]] = {}
        self._groups: dict[int, int] = {}  # job id -> its process group, while it runs
        self._pending_lock = threading.Lock()
        self._env_sent: dict[str, str] | None = None  # the base env the launcher holds
        self.lost = False
        self.pid_of_owner = os.getpid()
        threading.Thread(target=self._read, args=(self.proc.stdout,), daemon=True,
                         name=f"flowforge-launcher-{self.proc.pid}").start()
        processes.on_kill_all(self.kill_all)

    def submit(self, request: dict[str, Any], base_env: dict[str, str] | None = None
               ) -> tuple[int, queue.SimpleQueue[dict[str, Any] | None]]:
        """Send a job; its replies (log lines, then the result) arrive on the returned queue,
        or None if the launcher dies first. `base_env` travels only when it differs from the
        last one sent: the launcher keeps it for the jobs that follow."""
        replies: queue.SimpleQueue[dict[str, Any] | None] = queue.SimpleQueue()
        job_id = next(self._ids)
        with self._pending_lock:
            self._pending[job_id] = replies
            if self.lost:
                replies.put(None)
                return job_id, replies
        try:
            self._send({**request, "id": job_id}, base_env)
        except OSError:
            self._lose()
        return job_id, replies

    def forget(self, job_id: int) -> None:
        with self._pending_lock:
            self._pending.pop(job_id, None)
            self._groups.pop(job_id, None)

    def kill(self, job_id: int, replies: queue.SimpleQueue[dict[str, Any] | None]) -> None:
        """SIGKILL one job's group and wait (briefly) until the launcher has cleaned it up."""
        with contextlib.suppress(OSError):
            self._send({"op": "kill", "id": job_id})
        deadline = time.monotonic() + _KILL_WAIT
        while (left := deadline - time.monotonic()) > 0:
            try:
                reply = replies.get(timeout=left)
            except queue.Empty:
                return
            if reply is None or "result" in reply:
                return

    def kill_all(self, grace: float = 2.0) -> None:
        """Terminate every job the launcher runs (SIGTERM, `grace`, SIGKILL) and wait for it."""
        if self.lost or self.pid_of_owner != os.getpid():
            return
        job_id, replies = self.submit({"op": "kill_all", "grace": grace})
        try:
            with contextlib.suppress(queue.Empty):
                replies.get(timeout=grace + _KILL_WAIT)
        finally:
            self.forget(job_id)

    def lost_reason(self) -> str:
        code = None
        with contextlib.suppress(subprocess.TimeoutExpired):  # its pipe closes just before
            code = self.proc.wait(1.0)
        how = "" if code is None else f" (exit code {code})"
        if code is not None and code < 0:
            with contextlib.suppress(ValueError):
                how = f" (killed by {signal.Signals(-code).name})"
        return f"the job launcher (pid {self.proc.pid}) exited while the job ran{how}"

    def _send(self, message: dict[str, Any], base_env: dict[str, str] | None = None) -> None:
        with self._write_lock:  # held from the env comparison on: the launcher reads in order
            if base_env is not None and base_env != self._env_sent:
                message = {**message, "base_env": base_env}
                self._env_sent = base_env
            write_line(self._stdin, message)

    def _read(self, stdout: IO[bytes]) -> None:
        try:
            for line in stdout:
                reply = json.loads(line)
                job_id = reply["id"]
                with self._pending_lock:
                    if "group" in reply:  # kept for `_lose`, its caller need not wake for it
                        if job_id in self._pending:
                            self._groups[job_id] = reply["group"]
                        continue
                    replies = self._pending.get(job_id)
                if replies is not None:
                    replies.put(reply)
        finally:
            self._lose()

    def _lose(self) -> None:
        """The launcher is gone: kill the jobs it left running, then fail their callers."""
        with self._pending_lock:
            self.lost = True
            waiting = list(self._pending.values())
            orphans = list(self._groups.values())
            self._groups.clear()
        for pgid in orphans:
            _kill_orphan(pgid)
        for replies in waiting:
            replies.put(None)


def _kill_orphan(pgid: int) -> None:
    """SIGKILL the group of a job whose launcher died.

    The launcher may have reaped the job's main process just before dying, so its pid may
    belong to someone else by now: a process still using it must lead its own session, as
    every job does. While the group has members the pid cannot be reused, so without a
    process of that pid what is signalled is still the job's group.
    """
    fields = processes.stat_fields(pgid)  # None: gone, or no /proc; the group is all to check
    if fields is not None and int(fields[3]) != pgid:  # session: not a session leader
        return
    processes.signal_group(pgid, signal.SIGKILL)


__all__ = ["Launcher", "LauncherExecutor", "write_all", "write_line"]
