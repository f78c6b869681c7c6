"""The warm runner `flowforge up` serves its pool with: a Prefect process worker whose flow runs
are forked from a fork server that imported Prefect and FlowForge once.

Every other integration test runs its workflows on it too (it is the default); these check
what is its own: what Prefect sees, a child killed, cancellation of the process group, new
code after an update, the parent's memory over many runs, and the fallback to Prefect's worker.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.states import Scheduled

from tests.conftest import (
    Stack,
    children_of,
    create_workflow,
    fork_server,
    run_workflow,
    start_stack,
    wait_run,
    worker_record,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def warm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("warm-home")) as started:
        yield started


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def started_run(api: httpx.Client, name: str) -> str:
    response = api.post(f"/workflows/{name}/runs", json={"inputs": {}})
    assert response.status_code == 201, response.text
    return str(response.json()["run_id"])


def sleeping_run(api: httpx.Client, name: str) -> str:
    """A run of workflow `name` (one job sleeping 300 s) whose job is running."""
    create_workflow(api, {"name": name, "jobs": [
        {"name": "wait", "runtime": "bash", "script": "sleep 300"}]})
    run_id = started_run(api, name)
    job_started(api, run_id)
    return run_id


def job_started(api: httpx.Client, run_id: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = api.get(f"/runs/{run_id}").json()
        if body["jobs"] and body["jobs"][0]["state"] == "RUNNING":
            return
        time.sleep(0.1)
    raise AssertionError(f"the job of {run_id} never ran")


def test_prefect_sees_a_process_worker_and_runs_move_through_their_states(warm: Stack) -> None:
    record = worker_record(warm)
    assert record["argv"][1:3] == ["-m", "flowforge.stack.runner"], record
    with warm.prefect_http() as prefect:
        workers = prefect.post("/work_pools/flowforge-process/workers/filter", json={}).json()
        pool = prefect.get("/work_pools/flowforge-process").json()
    assert pool["type"] == "process"
    assert any(w["status"] == "ONLINE" for w in workers), workers
    with warm.client() as api:
        create_workflow(api, {"name": "warm-hello", "jobs": [
            {"name": "hi", "runtime": "bash", "script": "echo hello from $$"}]})
        run = run_workflow(api, "warm-hello")
        assert run["state"] == "COMPLETED", run
        with warm.prefect_http() as prefect:
            states = [s["type"] for s in prefect.get(
                "/flow_run_states/", params={"flow_run_id": run["id"]}).json()]
        assert states[-3:] == ["PENDING", "RUNNING", "COMPLETED"], states
        logs = api.get(f"/runs/{run['id']}/logs").json()
        assert any("hello from" in line["message"] for line in logs), logs


def test_a_child_killed_leaves_its_run_crashed_and_the_runner_serving(warm: Stack) -> None:
    with warm.client() as api:
        run_id = sleeping_run(api, "warm-victim")
        runner = worker_record(warm)["pid"]
        server = fork_server(warm)
        children = children_of(server)
        assert len(children) == 1, children
        child = children[0]
        group = os.getpgid(child)
        assert group == child  # its own session: a cancel reaches its launcher and jobs
        os.kill(child, signal.SIGKILL)
        run = wait_run(api, run_id, timeout=60)
        assert run["prefect_state"] == "Crashed", run
        assert "SIGKILL" in run["message"] or "-9" in run["message"], run
        deadline = time.monotonic() + 15
        while _group_alive(group) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(group), "the job outlived its killed flow run"
        assert worker_record(warm)["pid"] == runner  # the runner itself was not hurt
        create_workflow(api, {"name": "warm-next", "jobs": [
            {"name": "hi", "runtime": "bash", "script": "echo next"}]})
        assert run_workflow(api, "warm-next")["state"] == "COMPLETED"


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


def test_cancelling_mid_job_kills_the_runs_process_group(warm: Stack) -> None:
    with warm.client() as api:
        run_id = sleeping_run(api, "warm-cancel")
        child = children_of(fork_server(warm))[0]
        assert api.post(f"/runs/{run_id}/cancel").status_code == 202
        run = wait_run(api, run_id, timeout=60)
        assert run["state"] == "CANCELLED", run
        deadline = time.monotonic() + 30
        while _group_alive(child) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _group_alive(child), "the run's process group outlived its cancellation"


def test_a_workflow_updated_between_two_runs_runs_its_new_script(warm: Stack) -> None:
    with warm.client() as api:
        for version in ("first", "second"):
            create_workflow(api, {"name": "warm-update", "jobs": [
                {"name": "say", "runtime": "bash",
                 "script": f"source \"$FLOWFORGE_HELPERS/flowforge.sh\"\n"
                           f"ff_output '{{\"said\": \"{version}\"}}'"}]})
            run = run_workflow(api, "warm-update")
            assert run["state"] == "COMPLETED", run
            assert run["jobs"][0]["output"] == {"said": version}, run


NOOP_FLOW = """
from prefect import flow


@flow(persist_result=False)
async def noop() -> int:  # async: a sync flow waits up to 1 s for its heartbeat thread
    return 1
"""


RUNS = int(os.environ.get("FLOWFORGE_TEST_WARM_RUNS", "200"))


@pytest.mark.timeout(900)
def test_the_runners_memory_does_not_grow_with_runs(warm: Stack, tmp_path: Path) -> None:
    """200 runs in a row: the worker's and the fork server's RSS grow by under 20 MiB.

    The runs are of a no-op flow deployed on the runner's pool the way a Prefect user deploys
    one (a file, a `set_working_directory` pull step): what the parent does per run is the
    same for any flow. 200, not the 500 the issue names: on this suite's SQLite Prefect server
    a run costs ~1.6 s of its writes, and 500 took 14 minutes (passed on 2026-12-07, see
    docs/performance.md); FLOWFORGE_TEST_WARM_RUNS raises it."""
    (tmp_path / "noop.py").write_text(NOOP_FLOW)
    tmp_path.chmod(0o755)
    worker = worker_record(warm)["pid"]
    server = fork_server(warm)
    with SyncPrefectClient(warm.prefect_url, auth_string=warm.prefect_auth) as client:
        deployment = client.create_deployment(
            flow_id=client.create_flow_from_name("noop"), name="noop",
            work_pool_name="flowforge-process", entrypoint="noop.py:noop", path=str(tmp_path),
            pull_steps=[{"prefect.deployments.steps.set_working_directory": {
                "directory": str(tmp_path)}}])

        def runs(count: int, at_once: int = 10) -> None:
            """`count` runs, `at_once` at a time; one filtered read per poll, not one per run
            (the SQLite Prefect server's writes are what bounds this test's time)."""
            for first in range(0, count, at_once):
                made = [client.create_flow_run_from_deployment(deployment).id
                        for _ in range(min(at_once, count - first))]
                deadline = time.monotonic() + 120
                while True:
                    states = [fr.state for fr in client.read_flow_runs(
                        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=made)))]
                    if len(states) == len(made) and all(x and x.is_final() for x in states):
                        assert all(x and x.is_completed() for x in states), states
                        break
                    assert time.monotonic() < deadline, states
                    time.sleep(0.3)

        runs(24)  # warm-up: connection pools, caches, the first imports
        before = rss_kib(worker) + rss_kib(server)
        runs(RUNS)
        grown = rss_kib(worker) + rss_kib(server) - before
    assert grown < 20 * 1024, f"worker + fork server RSS grew by {grown} KiB over {RUNS} runs"
    assert fork_server(warm) == server and worker_record(warm)["pid"] == worker


@pytest.fixture(scope="module")
def plain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with start_stack(tmp_path_factory.mktemp("plain-home"), "--runner", "process") as started:
        yield started


def test_prefects_own_process_worker_is_the_fallback(plain: Stack) -> None:
    assert worker_record(plain)["argv"][1:5] == ["-m", "prefect", "worker", "start"]
    with plain.client() as api:
        create_workflow(api, {"name": "plain-hello", "jobs": [
            {"name": "hi", "runtime": "bash", "script": "echo plain"}]})
        assert run_workflow(api, "plain-hello")["state"] == "COMPLETED"


def test_a_run_cancelled_while_its_interpreter_starts_ends_cancelled(
        plain: Stack, shared_dir: Path) -> None:
    """Prefect's worker: cancelled between the worker taking it and its process starting
    (held here by a slow `sitecustomize`); the engine refuses to start a Cancelling run and
    the worker's pending-run cancellation ends it and its process."""
    shared = shared_dir
    slow = shared / "slow"
    slow.mkdir()
    (slow / "sitecustomize.py").write_text(
        "import pathlib, time\n"
        f"pathlib.Path({str(shared / 'pid')!r}).write_text(str(__import__('os').getpid()))\n"
        "time.sleep(8)\n")
    marker = shared / "ran"
    with plain.client() as api:
        create_workflow(api, {"name": "pending-cancel", "jobs": [
            {"name": "a", "runtime": "bash", "env": {"MARKER": str(marker)},
             "script": 'touch "$MARKER"'}]})
        with SyncPrefectClient(plain.prefect_url, auth_string=plain.prefect_auth) as client:
            deployment = client.read_deployment_by_name("pending-cancel/pending-cancel")
            run_id = str(client.create_flow_run_from_deployment(
                deployment.id, state=Scheduled(), tags=["flowforge"],
                job_variables={"env": {"PYTHONPATH": str(slow)}}).id)
        deadline = time.monotonic() + 60
        while not (shared / "pid").exists():
            assert time.monotonic() < deadline, api.get(f"/runs/{run_id}").json()
            time.sleep(0.1)
        assert api.get(f"/runs/{run_id}").json()["state"] == "PENDING"
        assert api.post(f"/runs/{run_id}/cancel").status_code == 202
        run = wait_run(api, run_id, timeout=60)
        assert run["state"] == "CANCELLED", run
        pid = int((shared / "pid").read_text())
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and \
                Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z":
            assert time.monotonic() < deadline, f"flow-run process {pid} survived the cancel"
            time.sleep(0.5)
        assert not marker.exists()
