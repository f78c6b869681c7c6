"""The job launcher: what holds because jobs run from a process of their own.

The executor's behaviour (streaming, timeouts, cleanup, kills) is tested through the launcher
in `test_local_executor.py`; this file covers what only the launcher has: routing many
concurrent jobs' replies, dying, and outliving the flow-run process that started it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from flowforge.runtime.executors.base import ScriptRequest
from flowforge.runtime.executors.launcher import Launcher, LauncherExecutor
from flowforge.runtime.executors.local import LocalExecutor
from tests.unit.test_local_executor import running


def wait_gone(pid: int, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while running(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not running(pid)


def wait_for_file(path: Path, seconds: float = 20.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if path.exists() and path.read_text().strip():
            return path.read_text()
        time.sleep(0.05)
    raise AssertionError(f"{path} was never written")


def test_concurrent_jobs_get_their_own_logs_and_outputs() -> None:
    """Replies are routed by job: 40 jobs from 8 threads, each checking its own lines."""
    executor = LauncherExecutor()
    script = ('source "$FLOWFORGE_HELPERS/flowforge.sh"\n'
              'n=$(ff_input | python3 -c "import json,sys; print(json.load(sys.stdin)[\'item\'])")\n'
              'for i in 1 2 3; do echo "job $n line $i"; done; echo "err $n" >&2\n'
              'ff_output "{\\"n\\": $n}"\n')
    problems: list[str] = []

    def one(n: int) -> None:
        lines: list[tuple[str, str]] = []
        result = executor.run(ScriptRequest(name=f"j{n}", runtime="bash", script=script,
                                        input={"item": n}), lambda s, line: lines.append((s, line)))
        expected = [("stdout", f"job {n} line {i}") for i in (1, 2, 3)]
        if result.error or result.output != {"n": n} or \
                [x for x in lines if x[0] == "stdout"] != expected or ("stderr", f"err {n}") not in lines:
            problems.append(f"{n}: {result} {lines}")

    threads = [threading.Thread(target=lambda k=k: [one(k * 5 + i) for i in range(5)]) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert problems == []


def test_a_launcher_that_dies_fails_its_jobs_clearly_kills_them_and_the_next_job_gets_a_new_one(
        shared_dir: Path) -> None:
    """A killed launcher cannot clean up after itself: the flow run kills the groups it
    reported, the job's background child too."""
    executor = LauncherExecutor()
    pid_file = shared_dir / "pid"
    results = []
    runner = threading.Thread(target=lambda: results.append(executor.run(
        ScriptRequest(name="j", runtime="bash",
                  script=f"sleep 100 &\necho $$ $! > {pid_file}\nwait"),
        lambda s, line: None)))
    runner.start()
    pids = [int(p) for p in wait_for_file(pid_file).split()]
    launcher = Launcher.get()
    os.kill(launcher.proc.pid, signal.SIGKILL)  # the launcher this test started
    runner.join(10)
    try:
        assert not runner.is_alive()
        assert results[0].exit_code is None
        assert results[0].error == (f"the job launcher (pid {launcher.proc.pid}) exited while the "
                                    f"job ran (killed by SIGKILL)")
        assert all(wait_gone(pid) for pid in pids)
    finally:
        for pid in pids:
            if running(pid):
                os.kill(pid, signal.SIGKILL)

    result = executor.run(ScriptRequest(name="j", runtime="bash", script="echo again"), lambda s, line: None)
    assert result.error is None
    assert Launcher.get() is not launcher


FLOW_PROCESS = textwrap.dedent("""
    import sys, threading
    from flowforge.runtime.executors.launcher import LauncherExecutor
    from flowforge.runtime.executors.base import ScriptRequest

    job = ScriptRequest(name="j", runtime="bash",
                    script="sleep 300 & echo $! > " + sys.argv[1] + "\\nwait")
    threading.Thread(target=LauncherExecutor().run, args=(job, lambda s, l: None)).start()
    threading.Event().wait()
""")


def test_jobs_do_not_outlive_a_flow_run_process_killed_with_sigkill(shared_dir: Path) -> None:
    """SIGKILL leaves no chance to clean up in the flow-run process; the launcher sees its
    stdin close and kills the jobs itself."""
    pid_file = shared_dir / "pid"
    root = Path(__file__).resolve().parents[2]
    flow = subprocess.Popen([sys.executable, "-c", FLOW_PROCESS, str(pid_file)],
                            env={**os.environ, "PYTHONPATH": str(root)})
    try:
        grandchild = int(wait_for_file(pid_file))
        assert running(grandchild)
    finally:
        flow.kill()  # the process this test started
        flow.wait()
    assert wait_gone(grandchild), "the job outlived its flow-run process"


def test_the_launcher_ignores_a_terminals_ctrl_c(shared_dir: Path) -> None:
    """Ctrl-C goes to the flow run, which decides whether its jobs stop; the launcher runs in a
    session of its own and ignores SIGINT, so a job survives it."""
    pid_file = shared_dir / "pid"
    results = []
    executor = LauncherExecutor()
    runner = threading.Thread(target=lambda: results.append(executor.run(
        ScriptRequest(name="j", runtime="bash", script=f"echo $$ > {pid_file}\nsleep 1\necho done"),
        lambda s, line: None)))
    runner.start()
    wait_for_file(pid_file)
    launcher = Launcher.get()
    assert os.getsid(launcher.proc.pid) == launcher.proc.pid
    os.kill(launcher.proc.pid, signal.SIGINT)
    runner.join(20)
    assert results and results[0].error is None
    assert launcher.proc.poll() is None


class InProcessLoop:
    """The launcher's loop on a thread of this process, spoken to over two pipes, so a test
    can patch what it calls. `request` sends one run; `replies` reads until a job's result."""

    def __init__(self) -> None:
        from flowforge.runtime.executors.launcher_main import _Closed, _Loop

        self._to_loop_r, self._to_loop = os.pipe()
        self._from_loop, from_loop_w = os.pipe()
        self._replies = os.fdopen(self._from_loop, "rb")
        self._loop = _Loop(from_loop_w)
        self._out = from_loop_w

        def serve() -> None:
            with contextlib.suppress(_Closed):
                self._loop.serve(self._to_loop_r)

        self._thread = threading.Thread(target=serve, daemon=True)
        self._thread.start()

    def request(self, job_id: int, script: str, timeout: float | None = None) -> None:
        executor = LauncherExecutor()
        message = {**executor._request(ScriptRequest(name=f"j{job_id}", runtime="bash", script=script,
                                                 timeout=timeout)),
                   "id": job_id, "base_env": executor._base_env()}
        os.write(self._to_loop, (json.dumps(message) + "\n").encode())

    def result(self) -> dict[str, Any]:
        while True:
            reply = json.loads(self._replies.readline())
            if "result" in reply:
                return cast(dict[str, Any], reply)

    def close(self) -> None:
        os.close(self._to_loop)
        self._thread.join(10)
        self._replies.close()
        for fd in (self._to_loop_r, self._out):
            with contextlib.suppress(OSError):
                os.close(fd)


@pytest.fixture
def loop() -> Iterator[InProcessLoop]:
    harness = InProcessLoop()
    yield harness
    harness.close()


def test_a_bug_while_supervising_a_job_answers_with_an_error_and_kills_the_job(
        loop: InProcessLoop, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The loop serves every job, so an exception in one job's step must fail that job (its
    caller would otherwise wait forever) and leave the loop serving the others."""
    def broken(self: LocalExecutor, job_dir: Path, *args: Any) -> Any:
        if job_dir.name.startswith("flowforge-j1-"):
            raise RuntimeError("collect broke")
        return real_finish(self, job_dir, *args)

    real_finish = LocalExecutor.finish
    monkeypatch.setattr(LocalExecutor, "finish", broken)
    loop.request(1, "echo one")
    reply = loop.result()
    assert reply["id"] == 1
    assert reply["result"]["error"] == "the job launcher failed: RuntimeError: collect broke"
    loop.request(2, "echo two")
    reply = loop.result()
    assert reply["id"] == 2 and reply["result"]["error"] is None and reply["result"]["exit_code"] == 0


def test_without_pidfds_the_loop_polls_for_exits(loop: InProcessLoop, monkeypatch: pytest.MonkeyPatch) -> None:
    """Where `os.pidfd_open` is missing (not Linux) or refused, exits are found by polling,
    and timeouts still hold."""
    monkeypatch.delattr(os, "pidfd_open")
    loop.request(1, "exit 3")
    assert loop.result()["result"]["exit_code"] == 3
    started = time.monotonic()
    loop.request(2, "sleep 30", timeout=0.5)
    reply = loop.result()["result"]
    assert reply["timed_out"] and reply["error"] == "timed out after 0.5s"
    assert time.monotonic() - started < 10
