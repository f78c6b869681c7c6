"""The supervisor keeps its children up: real processes killed with SIGKILL, a fake clock.

The orphan test runs in a process of its own, which makes itself the subreaper: the test
runner must never adopt (and stop) the processes of other fixtures.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from api.services.health import processes
from flowforge.stack import orphans
from flowforge.stack.children import Child, PidFile
from flowforge.stack.keeper import FAILED, RESTARTING, RUNNING, Keeper, RestartPolicy

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[Child]:
    child = Child(name="worker", argv=SLEEPER, env=dict(os.environ),
                  log_path=tmp_path / "logs" / "worker.log")
    child.start()
    yield child
    child.stop(timeout=2)


def kill(child: Child) -> None:
    assert child.pid is not None
    os.killpg(child.pid, signal.SIGKILL)
    assert child.process is not None
    child.process.wait(10)


def test_backoff_doubles_up_to_its_maximum() -> None:
    policy = RestartPolicy(initial=1, maximum=30)
    assert [policy.delay(n) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_killed_child_is_restarted_after_its_backoff_and_the_others_are_left_alone(
        tmp_path: Path, sleeper: Child) -> None:
    other = Child(name="api", argv=SLEEPER, env=dict(os.environ), log_path=tmp_path / "api.log")
    other.start()
    said: list[str] = []
    clock = Clock()
    pids = PidFile(tmp_path)
    pids.children, pids.state = [sleeper, other], "running"
    keeper = Keeper([sleeper, other], pids, said.append, RestartPolicy(initial=2), clock)
    try:
        keeper.tick()
        first, api_pid = sleeper.pid, other.pid
        kill(sleeper)
        keeper.tick()
        assert keeper.states["worker"].status == RESTARTING
        assert "worker" in said[-1] and "killed by signal 9 (SIGKILL)" in said[-1]
        assert "restarting it in 2s" in said[-1]
        recorded = json.loads(pids.path.read_text())["children"]["worker"]
        assert recorded["status"] == RESTARTING and "signal 9" in recorded["last_exit"]
        assert "worker restarting (it was killed by signal 9" in str(processes(tmp_path))

        clock.now += 1.9
        keeper.tick()
        assert not sleeper.running()  # still backing off
        clock.now += 0.2
        keeper.tick()
        assert sleeper.running() and sleeper.pid != first
        assert keeper.states["worker"].restarts == 1
        assert other.running() and other.pid == api_pid  # never touched
        assert json.loads(pids.path.read_text())["children"]["worker"]["status"] == RUNNING
        assert processes(tmp_path) == "ok"
    finally:
        other.stop(timeout=2)


def test_a_child_that_keeps_dying_is_reported_not_restarted_in_a_loop(
        tmp_path: Path, sleeper: Child) -> None:
    said: list[str] = []
    clock = Clock()
    pids = PidFile(tmp_path)
    pids.children = [sleeper]
    keeper = Keeper([sleeper], pids, said.append,
                    RestartPolicy(initial=1, maximum=4, give_up_after=3), clock)
    delays = []
    for _ in range(3):
        kill(sleeper)
        keeper.tick()
        state = keeper.states["worker"]
        assert state.status == RESTARTING and state.restart_at is not None
        delays.append(state.restart_at - clock.now)
        clock.now = state.restart_at
        keeper.tick()
        assert sleeper.running()
    assert delays == [1, 2, 4]
    kill(sleeper)
    keeper.tick()
    assert keeper.states["worker"].status == FAILED and keeper.failed() == ["worker"]
    assert "not restarted" in said[-1] and str(sleeper.log_path) in said[-1]
    clock.now += 3600
    keeper.tick()
    assert not sleeper.running()  # left down


def test_a_child_up_long_enough_starts_its_count_over(tmp_path: Path, sleeper: Child) -> None:
    clock = Clock()
    pids = PidFile(tmp_path)
    pids.children = [sleeper]
    keeper = Keeper([sleeper], pids, lambda _: None, RestartPolicy(initial=1, stable=60), clock)
    for _ in range(2):
        kill(sleeper)
        keeper.tick()
        clock.now = keeper.states["worker"].restart_at or 0
        keeper.tick()
    assert keeper.states["worker"].deaths_in_a_row == 2
    clock.now += 61
    keeper.tick()
    assert keeper.states["worker"].deaths_in_a_row == 0
    kill(sleeper)
    keeper.tick()
    assert keeper.states["worker"].restart_at == clock.now + 1  # back to the first delay


# A "worker" whose "flow run" starts in a session of its own, as Prefect's does, and whose "job"
# is in a process group of its own again, as the launcher's are; the job ignores SIGTERM.
JOB = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(120)"
RUN = (f"import subprocess, sys, time\n"
       f"job = subprocess.Popen([sys.executable, '-c', {JOB!r}], process_group=0)\n"
       f"print(job.pid, flush=True)\ntime.sleep(120)\n")
WORKER = (f"import subprocess, sys, time\n"
          f"run = subprocess.Popen([sys.executable, '-c', {RUN!r}], start_new_session=True,\n"
          f"                       stdout=subprocess.PIPE, text=True)\n"
          f"print(run.pid, run.stdout.readline().strip(), flush=True)\ntime.sleep(120)\n")
SUPERVISOR = textwrap.dedent(f"""
    import json, os, subprocess, sys, time
    from flowforge.stack import orphans
    assert orphans.stop_adopted(()) == []  # not the subreaper yet: stops nothing
    assert orphans.become_subreaper()
    worker = subprocess.Popen([sys.executable, "-c", {WORKER!r}], stdout=subprocess.PIPE,
                              text=True, start_new_session=True)
    run_pid, job_pid = map(int, worker.stdout.readline().split())
    os.killpg(worker.pid, 9)
    worker.wait()
    deadline = time.monotonic() + 10
    while run_pid not in orphans.adopted([]) and time.monotonic() < deadline:
        time.sleep(0.05)
    adopted_before = sorted(orphans.adopted([]))
    started = time.monotonic()
    stopped = orphans.stop_adopted([], grace=1.0)
    took = time.monotonic() - started
    alive = [p for p in (run_pid, job_pid) if os.path.exists(f"/proc/{{p}}")]
    print(json.dumps({{"run": run_pid, "job": job_pid, "adopted": adopted_before,
                      "stopped": stopped, "alive": alive, "took": took}}))
""")


def test_a_dead_workers_flow_run_and_job_are_adopted_and_stopped() -> None:
    """Killed with the worker's group, Prefect's flow-run process (its own session) and its
    job (a group of its own, ignoring SIGTERM) lived on under PID 1; the subreaper stops both."""
    done = subprocess.run([sys.executable, "-c", SUPERVISOR], capture_output=True, text=True,
                          timeout=60, cwd=Path(__file__).parents[2])
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["adopted"] == [result["run"]]  # the job still had its parent then
    assert set(result["stopped"]) == {result["run"], result["job"]}
    assert result["alive"] == []
    assert result["took"] < 30  # generous: SIGKILL after the 1 s grace


def test_nothing_is_stopped_by_a_process_that_is_not_the_subreaper(tmp_path: Path) -> None:
    bystander = subprocess.Popen(SLEEPER)  # like a fixture's server: our child, not ours to stop
    try:
        assert not orphans._subreaper
        assert orphans.stop_adopted(()) == []
        time.sleep(0.1)
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
