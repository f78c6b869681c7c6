"""The job launcher: local script jobs run from a small helper process, not the flow run's.

A flow-run process is GIL-bound while a large for-each runs: ten item threads and Prefect's
engine share one interpreter, and every system call an item makes lets go of the GIL and then
waits, often milliseconds, to get it back. Starting a job takes about 45 of them (make the
directory, write its files, pipes, fork, poll, collect, remove), which made a FlowForge item
three times slower than the bare `subprocess.run` of a hand-written Prefect task. So the flow
run hands the whole job to one launcher process per flow-run process instead: one write to send
the job, one wait for its result, and the launcher's threads make the system calls without
anyone else's bytecode to wait for.

The launcher runs each job with the in-process `LocalExecutor`, so a job behaves exactly as it
did (own session and group, filtered environment, timeouts, streaming, cleanup). It is started
on first use, in its own session so a terminal's Ctrl-C reaches the flow run and not it, and
it ignores SIGINT; it kills every job it runs when told to (`processes.kill_all` in the flow
run) and when its stdin closes, which happens when the flow-run process ends in any way, even
by SIGKILL, so a job can no longer outlive a killed flow run.

The protocol is one JSON object per line on the launcher's stdin and stdout:

    -> {"op": "run", "id": N, "job": {...}, "options": {...}}
    <- {"id": N, "log": [stream, line]} ... {"id": N, "result": {...}}
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
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import flowforge
from flowforge.runtime import processes, workdir
from flowforge.runtime.local import LocalExecutor, LogFn, ScriptJob, ScriptResult, inherited_env

#: How long a caller whose log callback failed waits for the killed job's result.
_KILL_WAIT = 10.0


class LauncherExecutor(LocalExecutor):
    """The `LocalExecutor`, running its jobs in the launcher process rather than this one.

    Holds no run state, so one may serve many threads. The options are the `LocalExecutor`'s
    and apply in the launcher; `base_env=None` means this process's environment, read at each
    run.
    """

    def run(self, job: ScriptJob, log: LogFn) -> ScriptResult:
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

    def _request(self, job: ScriptJob) -> dict[str, Any]:
        """The job as plain data; raises ValueError for a value that is not JSON."""
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
                        "python": self.python},
        }


def _write_line(fd: int, message: dict[str, Any]) -> None:
    """One protocol message; the caller holds the lock that keeps messages whole."""
    data = memoryview((json.dumps(message, ensure_ascii=False) + "\n").encode("utf-8"))
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
    def get(cls) -> Launcher:
        """This process's launcher, started on first use and again if it has died."""
        with cls._lock:
            current = cls._current
            if current is None or current.lost or current.pid_of_owner != os.getpid():
                current = cls._current = cls()
            return current

    def __init__(self) -> None:
        env = dict(os.environ)
        # The launcher must import this very copy of FlowForge, wherever the flow run found it.
        root = str(Path(flowforge.__file__).resolve().parents[1])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "flowforge.runtime.launcher"], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, env=env, start_new_session=True)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self._stdin = self.proc.stdin.fileno()
        self._write_lock = threading.Lock()
        self._ids = itertools.count(1)
        self._pending: dict[int, queue.SimpleQueue[dict[str, Any] | None]] = {}
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
            _write_line(self._stdin, message)

    def _read(self, stdout: IO[bytes]) -> None:
        try:
            for line in stdout:
                reply = json.loads(line)
                with self._pending_lock:
                    replies = self._pending.get(reply["id"])
                if replies is not None:
                    replies.put(reply)
        finally:
            self._lose()

    def _lose(self) -> None:
        with self._pending_lock:
            self.lost = True
            waiting = list(self._pending.values())
        for replies in waiting:
            replies.put(None)


# -- the launcher process -------------------------------------------------------------------


class _Server:
    """Reads requests in order; runs each job on a pooled thread, which makes the system calls
    of `LocalExecutor.run` and sends the replies."""

    def __init__(self, out: int) -> None:
        self._out = out
        self._base_env: dict[str, str] = {}
        self._queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self._idle = 0  # pooled threads waiting for a job (a thread per job cost a clone each)
        self._write_lock = threading.Lock()
        self._running: dict[int, subprocess.Popen[bytes] | None] = {}  # None: not started yet
        self._killed: set[int] = set()
        self._lock = threading.Lock()

    def send(self, message: dict[str, Any]) -> None:
        with self._write_lock:
            _write_line(self._out, message)

    def serve(self, requests: IO[bytes]) -> None:
        for line in requests:
            request = json.loads(line)
            op = request["op"]
            if "base_env" in request:
                self._base_env = request["base_env"]
            if op == "run":
                request["base_env"] = self._base_env
                self._dispatch(request)
            elif op == "kill":
                self._kill(request["id"])
            elif op == "kill_all":
                threading.Thread(target=self._kill_all, args=(request,), daemon=True).start()
        processes.kill_all()  # stdin closed: the flow run is done or gone

    def _dispatch(self, request: dict[str, Any]) -> None:
        with self._lock:
            start = self._idle == 0
            if not start:
                self._idle -= 1
        if start:
            threading.Thread(target=self._work, daemon=True).start()
        self._queue.put(request)

    def _work(self) -> None:
        while True:
            self._run(self._queue.get())
            with self._lock:
                self._idle += 1

    def _run(self, request: dict[str, Any]) -> None:
        job_id: int = request["id"]
        with self._lock:
            self._running[job_id] = None
        options = request["options"]
        spec = request["job"]
        executor = LocalExecutor(keep_dirs=options["keep_dirs"], kill_grace=options["kill_grace"],
                                 python=options["python"], base_env=request["base_env"])
        executor.on_spawn = lambda proc: self._spawned(job_id, proc)
        job = ScriptJob(
            name=spec["name"], runtime=spec["runtime"], script=spec["script"], env=spec["env"],
            input=workdir.EncodedJSON(spec["input"]), event=workdir.EncodedJSON(spec["event"]),
            variables=workdir.EncodedJSON(spec["variables"]) if spec["variables"] else {},
            timeout=spec["timeout"],
            work_root=None if spec["work_root"] is None else Path(spec["work_root"]),
        )

        def log(stream: str, line: str) -> None:
            self.send({"id": job_id, "log": [stream, line]})

        try:
            result = executor.run(job, log)
        except Exception as exc:  # a bug here must still answer, or the caller waits forever
            result = ScriptResult(exit_code=None, error=f"the job launcher failed: "
                                                        f"{type(exc).__name__}: {exc}")
        finally:
            with self._lock:
                self._running.pop(job_id, None)
                self._killed.discard(job_id)
        data = asdict(result)
        data["job_dir"] = None if result.job_dir is None else str(result.job_dir)
        self.send({"id": job_id, "result": data})

    def _spawned(self, job_id: int, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._running[job_id] = proc
            killed = job_id in self._killed
        if killed:  # the kill came while the job was being started
            processes.signal_group(proc.pid, signal.SIGKILL)

    def _kill(self, job_id: int) -> None:
        with self._lock:
            if job_id not in self._running:  # already over
                return
            proc = self._running[job_id]
            self._killed.add(job_id)
        if proc is not None:
            processes.signal_group(proc.pid, signal.SIGKILL)

    def _kill_all(self, request: dict[str, Any]) -> None:
        processes.kill_all(request["grace"])
        self.send({"id": request["id"], "killed": True})


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the flow run decides when its jobs stop
    out = os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing else may write into the protocol
    with os.fdopen(0, "rb") as requests:
        _Server(out).serve(requests)
    os._exit(0)  # job threads still writing results nobody reads must not hold the exit


if __name__ == "__main__":
    main()


__all__ = ["Launcher", "LauncherExecutor"]
