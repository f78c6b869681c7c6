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
kills, streaming, cleanup), and supervises every job from one thread (`_Loop`), so its own work
does not queue for the GIL either. It is started on first use, in its own session so a
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
import heapq
import itertools
import json
import os
import queue
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import IO, Any

import flowforge
from flowforge.runtime import processes, workdir
from flowforge.runtime.local import (
    DRAIN_SECONDS,
    LocalExecutor,
    LogFn,
    Output,
    ScriptJob,
    ScriptResult,
    Spawned,
    failure,
    inherited_env,
)

#: How long a caller whose log callback failed waits for the killed job's result.
_KILL_WAIT = 10.0
#: How often the launcher looks whether a group it signalled is gone (`processes.group_alive`
#: reads /proc: nothing to wait on), and whether a job exited where there are no pidfds.
_GROUP_POLL = 0.05
_EXIT_POLL = 0.05


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
    _write_all(fd, json.dumps(message, ensure_ascii=False) + "\n")


def _write_all(fd: int, text: str) -> None:
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
            _write_line(self._stdin, message)

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


# -- the launcher process -------------------------------------------------------------------


class _Loop:
    """One thread for every job: a selector over the request pipe, each job's two pipes and
    its pidfd, plus a heap of timers for timeouts, grace periods and the drain limit.

    The first launcher ran each job on a pooled thread with the blocking `LocalExecutor.run`;
    a quarter of its CPU went on those threads handing the GIL to each other. Here nothing
    waits but the selector, and the replies of one pass go out in one write.
    """

    def __init__(self, out: int) -> None:
        self._out = out
        self._outbox: list[str] = []
        self._selector = selectors.DefaultSelector()
        self._timers: list[tuple[float, int, Callable[[], None], _Job | None]] = []
        self._order = itertools.count()  # ties in the heap never compare the callbacks
        self._base_env: dict[str, str] = {}
        self.jobs: dict[int, _Job] = {}
        self._open = True

    def send(self, message: dict[str, Any]) -> None:
        self._outbox.append(json.dumps(message, ensure_ascii=False))

    def call_at(self, when: float, callback: Callable[[], None], job: _Job | None = None) -> None:
        """Call `callback` at monotonic time `when`; a failure in it fails `job`."""
        heapq.heappush(self._timers, (when, next(self._order), callback, job))

    def watch(self, fd: int, callback: Callable[[int], None], job: _Job | None = None) -> None:
        self._selector.register(fd, selectors.EVENT_READ, (callback, job))

    def unwatch(self, fd: int) -> None:
        self._selector.unregister(fd)

    def serve(self, requests: int) -> None:
        self.watch(requests, _LineReader(self._request).read_from)
        while self._open:
            wait = None
            if self._timers:
                wait = max(0.0, self._timers[0][0] - time.monotonic())
            for key, _ in self._selector.select(wait):
                callback, job = key.data
                self._call(job, callback, key.fd)
            now = time.monotonic()
            while self._timers and self._timers[0][0] <= now:
                _, _, callback, job = heapq.heappop(self._timers)
                self._call(job, callback)
            self._flush()

    def close(self) -> None:
        self._open = False

    def _call(self, job: _Job | None, callback: Callable[..., None], *args: Any) -> None:
        try:
            callback(*args)
        except Exception as exc:  # a bug here must still answer, or the caller waits forever
            if job is None:
                raise
            job.abort(f"the job launcher failed: {type(exc).__name__}: {exc}")

    def _flush(self) -> None:
        if not self._outbox:
            return
        text = "\n".join(self._outbox) + "\n"
        self._outbox.clear()
        try:
            _write_all(self._out, text)
        except OSError:  # the flow run is gone: nobody to answer
            self.close()

    def _request(self, line: bytes) -> None:
        request = json.loads(line)
        op = request["op"]
        if "base_env" in request:
            self._base_env = request["base_env"]
        if op == "run":
            try:
                self._start(request)
            except Exception as exc:  # a bug here must still answer, or the caller waits forever
                self.result(request["id"], failure(f"the job launcher failed: "
                                                    f"{type(exc).__name__}: {exc}", time.monotonic()))
        elif op == "kill":
            job = self.jobs.get(request["id"])
            if job is not None:
                job.signal(signal.SIGKILL)
        elif op == "kill_all":
            self._kill_all(request["id"], request["grace"])

    def _start(self, request: dict[str, Any]) -> None:
        job_id: int = request["id"]
        options = request["options"]
        spec = request["job"]
        executor = LocalExecutor(keep_dirs=options["keep_dirs"], kill_grace=options["kill_grace"],
                                 python=options["python"], base_env=self._base_env)
        job = ScriptJob(
            name=spec["name"], runtime=spec["runtime"], script=spec["script"], env=spec["env"],
            input=workdir.EncodedJSON(spec["input"]), event=workdir.EncodedJSON(spec["event"]),
            variables=workdir.EncodedJSON(spec["variables"]) if spec["variables"] else {},
            timeout=spec["timeout"],
            work_root=None if spec["work_root"] is None else Path(spec["work_root"]),
        )
        started = time.monotonic()
        try:
            job_dir = executor.make_dir(job)
        except OSError as exc:
            self.result(job_id, failure(f"could not create the job directory: {exc}", started))
            return
        try:
            spawned = executor.spawn(job_dir, job)
        except BaseException:  # a bug: `_request` answers; the directory still goes
            if not executor.keep_dirs:
                workdir.remove(job_dir)
            raise
        if isinstance(spawned, str):
            self.result(job_id, executor.close_dir(job_dir, failure(spawned, started), None))
            return
        self.jobs[job_id] = _Job(self, job_id, executor, job_dir, spawned, job.timeout, started)
        self.send({"id": job_id, "group": spawned.proc.pid})  # the flow run's to kill if we die

    def result(self, job_id: int, result: ScriptResult) -> None:
        data = asdict(result)
        data["job_dir"] = None if result.job_dir is None else str(result.job_dir)
        self.send({"id": job_id, "result": data})

    def _kill_all(self, reply_id: int, grace: float) -> None:
        """SIGTERM every job's group, SIGKILL what is left after `grace`, then answer; the
        jobs' own results follow as their processes are reaped."""
        groups = [job.pid for job in self.jobs.values() if job.signal(signal.SIGTERM)]
        self.terminate(groups, grace, lambda: self.send({"id": reply_id, "killed": True}))

    def terminate(self, groups: list[int], grace: float, then: Callable[[], None],
                  job: _Job | None = None) -> None:
        """The loop's `processes.terminate_group`, for groups already sent SIGTERM: SIGKILL
        what is left of them after `grace`, then call `then` (a failure in it fails `job`)."""
        deadline = time.monotonic() + grace

        def check() -> None:
            nonlocal groups
            groups = [pgid for pgid in groups if processes.group_alive(pgid)]
            if groups and time.monotonic() < deadline:
                self.call_at(time.monotonic() + _GROUP_POLL, check, job)
                return
            for pgid in groups:  # what is left after the grace
                processes.signal_group(pgid, signal.SIGKILL)
            then()

        self.call_at(time.monotonic() + _GROUP_POLL, check, job)


class _LineReader:
    """Splits a pipe's bytes into lines for `handle`; a long request may take many reads."""

    def __init__(self, handle: Callable[[bytes], None]) -> None:
        self._handle = handle
        self._buffer = bytearray()

    def read_from(self, fd: int) -> None:
        data = os.read(fd, 1 << 16)
        if not data:
            raise _Closed
        searched = len(self._buffer)
        self._buffer += data
        begin = 0
        while (end := self._buffer.find(b"\n", searched)) >= 0:
            self._handle(bytes(self._buffer[begin:end]))
            begin = searched = end + 1
        del self._buffer[:begin]


class _Closed(Exception):
    """The request pipe reached its end: the flow-run process is done or gone."""


class _Job:
    """One running job, advanced by the loop's events.

    Its life is the blocking `LocalExecutor._supervise`, step by step: run (to the timeout,
    then SIGTERM and SIGKILL after the grace); once the main process has exited, SIGTERM what
    it left in its group and SIGKILL that after the grace; read the pipes until they close,
    at most `DRAIN_SECONDS` longer; then collect the results and remove the directory.
    """

    def __init__(self, loop: _Loop, job_id: int, executor: LocalExecutor, job_dir: Path,
                 spawned: Spawned, timeout: float | None, started: float) -> None:
        self.loop, self.id, self.executor, self.job_dir = loop, job_id, executor, job_dir
        self.proc = spawned.proc
        self.pid = spawned.proc.pid
        self.timeout, self.started = timeout, started
        self.output = Output(spawned, self._log)
        self.open = set(self.output.pipes)
        self.timed_out = False
        self.kill_at: float | None = None  # after a timeout: when the grace ends
        self.draining = False
        self.done = False  # supervision is over (collecting, or answered)
        self.answered = False
        for fd in self.open:
            loop.watch(fd, self._readable, self)
        self.pidfd: int | None = None
        with contextlib.suppress(AttributeError, OSError):  # no pidfds: poll for the exit
            self.pidfd = os.pidfd_open(self.pid)
        if self.pidfd is not None:
            loop.watch(self.pidfd, self._exit_readable, self)
        else:
            loop.call_at(started + _EXIT_POLL, self._poll_exit, self)
        if timeout is not None:
            loop.call_at(started + timeout, self._timed_out, self)

    @property
    def exited(self) -> bool:
        """Whether the main process has exited (and been reaped)."""
        return self.proc.returncode is not None

    def signal(self, sig: int) -> bool:
        """Signal the job's group while it is being supervised; False if it is gone."""
        return not self.done and processes.signal_group(self.pid, sig)

    def _log(self, stream: str, line: str) -> None:
        self.loop.send({"id": self.id, "log": [stream, line]})

    def _readable(self, fd: int) -> None:
        if fd not in self.open:  # an event left from before the pipe was closed
            return
        if not self.output.read(fd):
            self._close_pipe(fd)
            if self.draining and not self.open:
                self._finish()

    def _close_pipe(self, fd: int) -> None:
        self.loop.unwatch(fd)
        os.close(fd)
        self.open.discard(fd)

    def _exit_readable(self, fd: int) -> None:
        if fd != self.pidfd or self.proc.poll() is None:
            return
        self.loop.unwatch(fd)
        os.close(fd)
        self.pidfd = None
        self._exited()

    def _poll_exit(self) -> None:
        if self.done:
            return
        if self.proc.poll() is None:
            self.loop.call_at(time.monotonic() + _EXIT_POLL, self._poll_exit, self)
        else:
            self._exited()

    def _timed_out(self) -> None:
        if self.exited or self.done:
            return
        self.timed_out = True
        self.signal(signal.SIGTERM)
        self.kill_at = time.monotonic() + self.executor.kill_grace
        self.loop.call_at(self.kill_at, self._grace_over, self)

    def _grace_over(self) -> None:
        if not self.exited:  # once it has exited, `_exited` owns the rest of the grace
            self.signal(signal.SIGKILL)

    def _exited(self) -> None:
        """The main process is done; anything it left in its group goes now (within the
        grace still owed after a timeout), so the pipes close and the job really ends."""
        now = time.monotonic()
        grace = self.executor.kill_grace if self.kill_at is None else max(0.0, self.kill_at - now)
        if processes.signal_group(self.pid, signal.SIGTERM):
            self.loop.terminate([self.pid], grace, self._drain, self)
        else:
            self._drain()

    def _drain(self) -> None:
        if self.done:  # aborted meanwhile
            return
        self.draining = True
        if self.open:  # only an escaped grandchild can hold them now; it gets DRAIN_SECONDS
            self.loop.call_at(time.monotonic() + DRAIN_SECONDS, self._finish, self)
        else:
            self._finish()

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True
        for fd in list(self.open):
            self._close_pipe(fd)
        self.output.flush()
        processes.unregister(self.proc)
        result, listing = self.executor.finish(self.job_dir, self.proc.returncode, self.timed_out,
                                               self.output.tail, self.timeout, self.started)
        self._answer(self.executor.close_dir(self.job_dir, result, listing))

    def _answer(self, result: ScriptResult) -> None:
        self.answered = True
        self.loop.jobs.pop(self.id, None)
        self.loop.result(self.id, result)

    def abort(self, error: str) -> None:
        """Answer with `error` after a bug in the launcher; the job must not outlive it."""
        if self.answered:
            return
        self.done = True
        processes.signal_group(self.pid, signal.SIGKILL)
        for fd in list(self.open):
            with contextlib.suppress(Exception):
                self._close_pipe(fd)
        if self.pidfd is not None:
            with contextlib.suppress(Exception):
                self.loop.unwatch(self.pidfd)
            with contextlib.suppress(OSError):
                os.close(self.pidfd)
        with contextlib.suppress(Exception):
            self.proc.wait(1.0)
        processes.unregister(self.proc)
        result = failure(error, self.started)
        with contextlib.suppress(Exception):
            result = self.executor.close_dir(self.job_dir, result, None)
        self._answer(result)


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the flow run decides when its jobs stop
    out = os.dup(1)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # nothing else may write into the protocol
    loop = _Loop(out)
    with contextlib.suppress(_Closed):
        loop.serve(0)
    processes.kill_all()
    os._exit(0)


if __name__ == "__main__":
    main()


__all__ = ["Launcher", "LauncherExecutor"]
