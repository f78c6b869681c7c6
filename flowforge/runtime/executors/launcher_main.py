"""The launcher process: every local job of one flow-run process, supervised from one thread.

`python -m flowforge.runtime.executors.launcher_main` is started by `launcher.Launcher`; see
that module for why and for the protocol. The first launcher ran each job on a pooled thread
with the blocking `LocalExecutor.run`; a quarter of its CPU went on those threads handing the
GIL to each other. Here nothing waits but the selector, and the replies of one pass go out in
one write.
"""

from __future__ import annotations

import contextlib
import heapq
import itertools
import json
import os
import selectors
import signal
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from flowforge.runtime.executors import processes, workdir
from flowforge.runtime.executors.base import ScriptRequest, ScriptResult, failure
from flowforge.runtime.executors.jobuser import JobUser
from flowforge.runtime.executors.launcher import write_all
from flowforge.runtime.executors.local import DRAIN_SECONDS, LocalExecutor, Spawned
from flowforge.runtime.executors.streams import Output

#: How often the launcher looks whether a group it signalled is gone (`processes.group_alive`
#: reads /proc: nothing to wait on), and whether a job exited where there are no pidfds.
_GROUP_POLL = 0.05
_EXIT_POLL = 0.05


class _Loop:
    """One thread for every job: a selector over the request pipe, each job's two pipes and
    its pidfd, plus a heap of timers for timeouts, grace periods and the drain limit."""

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
            write_all(self._out, text)
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
                                 python=options["python"], base_env=self._base_env,
                                 user=JobUser.from_json(options["user"]))
        job = ScriptRequest(
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
        self.output = Output(spawned.stdout, spawned.stderr, self._log)
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
