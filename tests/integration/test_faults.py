"""Faults on a stack of its own: the worker killed with SIGKILL under a running job.

Before: `flowforge up` answered "worker was killed by signal 9" and stopped the API and the
Prefect server with it; the run stayed Running in Prefect, and its flow-run process, launcher
and job ran on under PID 1.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack, create_workflow, run_workflow, start_stack, wait_run

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("fault-home")) as started:
        yield started


def children(stack: Stack) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((stack.home / "run" / "pids.json").read_text())
    return dict(data["children"])


def running_worker(stack: Stack, timeout: float = 60) -> dict[str, Any]:
    """The worker's record once it runs (not while it is being restarted)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker: dict[str, Any] = children(stack)["worker"]
        if worker.get("status", "running") == "running" and Path(f"/proc/{worker['pid']}").exists():
            return worker
        time.sleep(0.2)
    raise AssertionError(f"the worker is not running: {children(stack)['worker']}")


def job_pid(api: httpx.Client, run_id: str, timeout: float = 60) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        logs = api.get(f"/runs/{run_id}/logs")
        if logs.status_code == 200:
            for line in logs.json():
                found = re.search(r"job-pid=(\d+)", line.get("message", ""))
                if found:
                    return int(found.group(1))
        time.sleep(0.3)
    raise AssertionError(f"run {run_id} never logged its job's pid")


def test_a_killed_worker_is_restarted_and_its_run_is_crashed_not_left_running(
        own_stack: Stack) -> None:
    with own_stack.client() as api:
        create_workflow(api, {"name": "long-job", "jobs": [
            {"name": "wait", "runtime": "bash", "script": "echo job-pid=$$; sleep 300"}]})
        started = api.post("/workflows/long-job/runs", json={"inputs": {}})
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]
        pid = job_pid(api, run_id)
        assert Path(f"/proc/{pid}").exists()

        worker = running_worker(own_stack)
        os.killpg(worker["pid"], signal.SIGKILL)

        run = wait_run(api, run_id, timeout=60)
        # The flow run's engine ends itself Crashed on the supervisor's SIGTERM ("aborted by a
        # termination signal"); the supervisor then gives the crash its real reason.
        deadline = time.monotonic() + 30
        while "worker" not in (run.get("message") or "") and time.monotonic() < deadline:
            time.sleep(0.3)
            run = api.get(f"/runs/{run_id}").json()
        assert run["state"] == "FAILED" and run["prefect_state"] == "Crashed", run
        assert "worker" in run["message"] and "signal 9" in run["message"], run
        # The flow run took the supervisor's SIGTERM as a cancellation of its running job.
        assert run["jobs"][0]["state"] in ("FAILED", "CANCELLED"), run
        deadline = time.monotonic() + 15
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not Path(f"/proc/{pid}").exists(), "the job outlived its worker"

        assert own_stack.process.poll() is None  # the stack is still up
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            now = children(own_stack)["worker"]
            health = httpx.get(f"{own_stack.api_url}/healthz", timeout=10)
            if now.get("status") == "running" and health.status_code == 200:
                break
            time.sleep(0.5)
        assert now["pid"] != worker["pid"] and now["restarts"] == 1, now
        assert health.status_code == 200, health.text

        create_workflow(api, {"name": "after-crash", "jobs": [
            {"name": "hi", "runtime": "bash", "script": "echo back"}]})
        after = run_workflow(api, "after-crash")
        assert after["state"] == "COMPLETED", after


def test_healthz_names_a_part_that_is_restarting(own_stack: Stack) -> None:
    """Killed twice in a row, the worker waits out a longer backoff; /healthz says so."""
    for _ in range(2):
        worker = running_worker(own_stack)
        os.killpg(worker["pid"], signal.SIGKILL)
        deadline = time.monotonic() + 30
        while children(own_stack)["worker"]["pid"] == worker["pid"] \
                and children(own_stack)["worker"]["status"] == "running":
            assert time.monotonic() < deadline
            time.sleep(0.05)
        if children(own_stack)["worker"]["status"] == "restarting":
            health = httpx.get(f"{own_stack.api_url}/healthz", timeout=10)
            if health.status_code == 503:
                details = health.json()["error"]["details"]
                assert "worker restarting" in details["processes"], details
                assert "signal 9" in details["processes"], details
                break
        deadline = time.monotonic() + 60
        while children(own_stack)["worker"]["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.2)
    else:
        raise AssertionError("never saw the restarting worker in /healthz")


def test_a_run_whose_heartbeats_stop_is_crashed_by_the_automation(
        own_stack: Stack, tmp_path: Path) -> None:
    """A worker on another host (here: a plain `prefect worker` no supervisor watches) dies
    with its flow run: only the missing heartbeats tell, and FlowForge's automation acts."""
    env = own_stack.prefect_env(PREFECT_FLOWS_HEARTBEAT_FREQUENCY="30",
                                PREFECT_WORKER_QUERY_SECONDS="0.5")
    subprocess.run([sys.executable, "-m", "prefect", "work-pool", "create", "remote-hb",
                    "--type", "process", "--overwrite"], env=env, check=True,
                   capture_output=True, timeout=120)
    log = (tmp_path / "remote-worker.log").open("wb")
    worker = subprocess.Popen(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "remote-hb"],
        env=env, cwd=own_stack.home / "project", stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True)
    try:
        with own_stack.client() as api:
            drift = api.get("/sync/check").json()
            assert "flowforge-crashed-runs" not in [i["name"] for i in drift["workflows"]], drift
            create_workflow(api, {"name": "remote-long", "settings": {"work_pool": "remote-hb"},
                                  "jobs": [{"name": "wait", "runtime": "bash",
                                            "script": "echo job-pid=$$; sleep 600"}]})
            started = api.post("/workflows/remote-long/runs", json={"inputs": {}})
            assert started.status_code == 201, started.text
            run_id = started.json()["run_id"]
            pid = job_pid(api, run_id, timeout=120)
            # The host dies: the worker, the flow run, its launcher and its job, all at once.
            chain, current = [], pid
            while current not in (worker.pid, 1, 0):
                chain.append(current)
                current = int(Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()[1])
            killed_at = time.monotonic()
            for member in [worker.pid, *chain]:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgid(member), signal.SIGKILL)
            worker.wait(10)
            run = wait_run(api, run_id, timeout=240)
            took = time.monotonic() - killed_at
            assert run["state"] == "FAILED" and run["prefect_state"] == "Crashed", run
            assert "no heartbeat" in (run["message"] or ""), run
            print(f"crash detected {took:.0f}s after the host died (heartbeat 30 s)")
            assert took < 200  # generous: twice the heartbeat, plus Prefect's evaluation
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(10)
        log.close()


def test_the_crash_detection_automation_is_kept_like_any_other(own_stack: Stack) -> None:
    with own_stack.client() as api, own_stack.prefect_http() as prefect:
        found = prefect.post("/automations/filter", json={}).json()
        mine = [a for a in found if a["name"] == "flowforge-crashed-runs"]
        assert len(mine) == 1, [a["name"] for a in found]
        trigger = mine[0]["trigger"]
        assert trigger["posture"] == "Proactive" and trigger["within"] == 60.0, trigger
        assert mine[0]["actions"][0]["state"] == "CRASHED"
        assert prefect.delete(f"/automations/{mine[0]['id']}").status_code == 204

        drift = api.get("/sync/check").json()
        assert not drift["in_sync"]
        assert {"name": "flowforge-crashed-runs",
                "drift": ["automation flowforge-crashed-runs (crash detection) is missing in "
                          "Prefect"]} in drift["workflows"], drift
        assert api.post("/sync").status_code == 200
        assert api.get("/sync/check").json()["in_sync"]


def test_on_crash_repair_finishes_a_crashed_run_by_itself(own_stack: Stack,
                                                          tmp_path: Path) -> None:
    """`settings.on_crash: repair`: the worker dies under the second job; the API starts one
    repair, which reuses the first job's output and runs the second again."""
    shared = tmp_path / "shared"
    shared.mkdir()
    shared.chmod(0o1777)
    ledger, mark = shared / "ledger", shared / "mark"
    with own_stack.client() as api:
        create_workflow(api, {
            "name": "self-healing", "settings": {"on_crash": "repair"},
            "jobs": [
                {"name": "first", "runtime": "bash", "env": {"LEDGER": str(ledger)},
                 "script": 'source "$FLOWFORGE_HELPERS/flowforge.sh"\n'
                           'echo first >> "$LEDGER"; ff_output \'{"n": 7}\''},
                {"name": "second", "runtime": "bash", "needs": ["first"],
                 "env": {"MARK": str(mark), "LEDGER": str(ledger),
                         "N": "{{ jobs.first.output.n }}"},
                 "script": 'echo "second $N" >> "$LEDGER"\n'
                           '[ -e "$MARK" ] && exit 0\ntouch "$MARK"; echo job-pid=$$; sleep 300'},
            ]})
        run_id = api.post("/workflows/self-healing/runs", json={"inputs": {}}).json()["run_id"]
        job_pid(api, run_id)
        os.killpg(running_worker(own_stack)["pid"], signal.SIGKILL)
        assert wait_run(api, run_id, timeout=60)["prefect_state"] == "Crashed"

        deadline = time.monotonic() + 120
        while len(runs := api.get("/workflows/self-healing/runs").json()) < 2:
            assert time.monotonic() < deadline, runs
            time.sleep(1)
        repair_id = next(r["id"] for r in runs if r["id"] != run_id)
        repaired = wait_run(api, repair_id, timeout=180)
        assert repaired["state"] == "COMPLETED", repaired
        trigger = repaired["trigger"]
        assert trigger["type"] == "repair" and trigger["repair_of"] == run_id, trigger
        assert trigger["crash_repairs"] == 1
        jobs = {job["name"]: job for job in repaired["jobs"]}
        assert jobs["first"]["reused"] and jobs["first"]["output"] == {"n": 7}
        assert ledger.read_text().splitlines() == ["first", "second 7", "second 7"]
        time.sleep(6)  # a pass of every API's loop later: still one repair
        assert len(api.get("/workflows/self-healing/runs").json()) == 2


def test_prefect_down_for_a_minute_loses_nothing(own_stack: Stack) -> None:
    """The Prefect server frozen (SIGSTOP) for 60 s while a workflow is created, another is
    changed and signed webhooks arrive: every request is answered (201/200/202), and once
    Prefect is back the definitions converge within a sync interval, the changed workflow runs
    its new script, and every delivery's run is created once and completes."""
    from api.services import signatures

    with own_stack.client() as api:
        create_workflow(api, {"name": "outage-hook", "inputs": {"n": {"type": "integer"}},
                              "jobs": [{"name": "j", "runtime": "python", "script":
                                        "import flowforge_helpers as ff\n"
                                        "ff.output({'n': ff.input()['inputs']['n']})"}]})
        create_workflow(api, {"name": "outage-change",
                              "jobs": [{"name": "j", "runtime": "bash", "script": "echo before"}]})
        hook = api.post("/workflows/outage-hook/triggers",
                        json={"type": "webhook", "inputs": {"n": "{{ body.n }}"}})
        assert hook.status_code == 201, hook.text
        url, secret = hook.json()["url"], hook.json()["secret"]
        prefect_pid = children(own_stack)["prefect-server"]["pid"]
        os.kill(prefect_pid, signal.SIGSTOP)
        stopped = time.monotonic()
        took = {}
        try:
            made = api.post("/workflows", json={"name": "made-in-outage", "jobs": [
                {"name": "j", "runtime": "bash", "script": "echo made"}]})
            took["create"] = time.monotonic() - stopped
            assert made.status_code == 201, made.text
            assert made.json()["sync"]["status"] == "pending", made.json()
            changed = api.put("/workflows/outage-change", json={
                "name": "outage-change",
                "jobs": [{"name": "j", "runtime": "python",
                          "script": "import flowforge_helpers as ff\nff.output({'v': 2})"}]})
            took["change"] = time.monotonic() - stopped - took["create"]
            assert changed.status_code == 200, changed.text
            for n in range(5):
                body = json.dumps({"n": n}).encode()
                answer = api.post(url, content=body, headers={
                    **signatures.sign(secret, body, f"outage-{n}"),
                    "Content-Type": "application/json"})
                assert answer.status_code == 202, answer.text
            took["deliveries"] = time.monotonic() - stopped - took["create"] - took["change"]
            assert time.monotonic() - stopped < 60, took  # all answered while Prefect was away
            time.sleep(60 - (time.monotonic() - stopped))
        finally:
            with contextlib.suppress(ProcessLookupError):  # restarted by the supervisor
                os.kill(prefect_pid, signal.SIGCONT)

        deadline = time.monotonic() + 120
        for name in ("made-in-outage", "outage-change", "outage-hook"):
            while api.get(f"/workflows/{name}").json()["sync"]["status"] != "synced":
                assert time.monotonic() < deadline, api.get(f"/workflows/{name}").json()
                time.sleep(1)
        outputs: list[int] = []
        while len(outputs) < 5:
            assert time.monotonic() < deadline, outputs
            runs = api.get("/workflows/outage-hook/runs").json()
            outputs = [api.get(f"/runs/{r['id']}").json()["jobs"][0]["output"]["n"]
                       for r in runs if r["state"] == "COMPLETED"]
            time.sleep(1)
        assert sorted(outputs) == list(range(5)), outputs  # each delivery's run, once
        assert len(api.get("/workflows/outage-hook/runs").json()) == 5
        assert run_workflow(api, "outage-change")["jobs"][0]["output"] == {"v": 2}
        assert run_workflow(api, "made-in-outage")["state"] == "COMPLETED"
