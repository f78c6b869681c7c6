"""The spine end to end: REST -> generated flow -> Prefect deployment -> process worker -> API.

Everything here runs for real: `flowforge up` started the Prefect server, the worker and the
API (tests/conftest.py); runs go through the work pool like a user's would.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.objects import State
from prefect.states import Cancelled, Cancelling, Pending, Scheduled

from flowforge.core import gate
from tests.conftest import (
    TERMINAL,
    Stack,
    children_of,
    create_workflow,
    fork_server,
    jobs_by_name,
    run_workflow,
    wait_run,
)

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_etl_example_runs_as_a_dag(api: httpx.Client, stack: Stack) -> None:
    create_workflow(api, (EXAMPLES / "etl.yaml").read_text())
    run = run_workflow(api, "customer-etl")
    assert run["state"] == "COMPLETED", run
    jobs = jobs_by_name(run)
    assert {j["state"] for j in jobs.values()} == {"COMPLETED"}
    assert run["outputs"] == {"total_rows": 1200 + 5400 + 310}
    assert jobs["join_transform"]["output"] == {"total": 6910}
    assert run["progress"] == {"done": 4, "total": 4}
    extracts = [jobs[n] for n in ("extract_customers", "extract_orders", "extract_products")]
    # the three 1 s extracts overlapped: each started before any other ended
    assert max(ts(j["started_at"]) for j in extracts) < min(ts(j["ended_at"]) for j in extracts)
    assert ts(jobs["join_transform"]["started_at"]) >= max(ts(j["ended_at"]) for j in extracts)
    assert run["prefect_ui_url"].endswith(f"/runs/flow-run/{run['id']}")
    assert run["trigger"]["type"] == "manual"

    listed = api.get("/workflows/customer-etl/runs").json()
    assert run["id"] in [r["id"] for r in listed]
    source = api.get("/workflows/customer-etl/flow").text
    assert "do not edit" in source and "wait_for=[allow_failure(j_extract_customers)" in source
    graph = api.get("/workflows/customer-etl/graph").text
    assert graph.startswith("flowchart TD") and graph.count("-->") == 3

    # Prefect's run graph: one task run per job, named after it, the join waiting on all three
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with SyncPrefectClient(stack.prefect_url, auth_string=stack.prefect_auth) as client:
        # Prefect records task runs from events, asynchronously: a task run first appears under
        # its pending name (`join_transform-71f`) and gets the job's name once it runs.
        deadline = time.monotonic() + 60
        while True:
            task_runs = client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run["id"]])))
            if {t.name for t in task_runs} == set(jobs) or time.monotonic() > deadline:
                break
            time.sleep(1)
        by_name = {t.name: t for t in task_runs}
        assert set(by_name) == set(jobs)
        upstream_ids = {i.id for i in by_name["join_transform"].task_inputs["wait_for"]}
        assert upstream_ids == {by_name[n].id for n in
                                ("extract_customers", "extract_orders", "extract_products")}


FAILURE_BRANCH = {
    "name": "failure-branch",
    "jobs": [
        {"name": "extract_a", "type": "script", "runtime": "bash", "script": "echo a"},
        {"name": "extract_b", "type": "script", "runtime": "bash",
         "script": "echo 'disk on fire' >&2; exit 3"},
        {"name": "join", "type": "script", "runtime": "python", "needs": ["extract_a", "extract_b"],
         "script": "print('never')"},
        {"name": "alert", "type": "script", "runtime": "bash",
         "needs": [{"job": "join", "on": "failure"}],
         "env": {"WHY": "{{ jobs.join.state }}"},
         "script": "source \"$FLOWFORGE_HELPERS/flowforge.sh\"\nff_output \"{\\\"why\\\": \\\"$WHY\\\"}\""},
        {"name": "report", "type": "script", "runtime": "bash", "needs": ["join"],
         "script": "echo report"},
    ],
}


def test_failure_branch(api: httpx.Client) -> None:
    create_workflow(api, FAILURE_BRANCH)
    run = run_workflow(api, "failure-branch")
    jobs = jobs_by_name(run)
    assert run["state"] == "FAILED"
    assert jobs["extract_a"]["state"] == "COMPLETED"
    assert jobs["extract_b"]["state"] == "FAILED"
    assert "exit code 3" in jobs["extract_b"]["error"] and "disk on fire" in jobs["extract_b"]["error"]
    assert jobs["join"]["state"] == "UPSTREAM_FAILED"
    assert "extract_b" in jobs["join"]["reason"]
    assert jobs["alert"]["state"] == "COMPLETED"
    assert jobs["alert"]["output"] == {"why": "UPSTREAM_FAILED"}
    assert jobs["report"]["state"] == "UPSTREAM_FAILED"
    assert run["progress"] == {"done": 5, "total": 5}


def test_sequential_fallback(api: httpx.Client, shared_dir: Path) -> None:
    marker = shared_dir / "order.txt"
    doc = {
        "name": "sequential",
        "inputs": {"path": {"type": "string"}},
        "jobs": [
            {"name": f"step{i}", "type": "script", "runtime": "bash", "env": {"P": "{{ inputs.path }}"},
             "script": f"sleep 0.2; echo step{i} >> \"$P\""}
            for i in (1, 2, 3)
        ],
    }
    create_workflow(api, doc)
    run = run_workflow(api, "sequential", {"path": str(marker)})
    assert run["state"] == "COMPLETED"
    assert marker.read_text().split() == ["step1", "step2", "step3"]
    jobs = run["jobs"]
    for before, after in itertools.pairwise(jobs):
        assert ts(after["started_at"]) >= ts(before["ended_at"])

    doc["jobs"][1]["script"] = "exit 1"
    create_workflow(api, doc)
    run = run_workflow(api, "sequential", {"path": str(shared_dir / "second.txt")})
    states = [j["state"] for j in run["jobs"]]
    assert states == ["COMPLETED", "FAILED", "UPSTREAM_FAILED"]


RULES = sorted(gate.RULES | set(gate.ALIASES))
MIXES = {
    "ok_bad": ["ok", "bad"],
    "ok_skip": ["ok", "skip"],
    "bad_uf": ["bad", "uf"],
    "skip_only": ["skip"],
    "all_ok": ["ok", "ok2"],
    "mixed4": ["ok", "bad", "skip", "uf"],
}
OUTCOMES: dict[str, gate.Outcome] = {"ok": "COMPLETED", "ok2": "COMPLETED", "bad": "FAILED",
                                     "skip": "SKIPPED", "uf": "UPSTREAM_FAILED"}


def test_every_run_if_rule_on_real_outcomes(api: httpx.Client) -> None:
    """Each Airflow/Databricks rule over mixes of real COMPLETED/FAILED/SKIPPED/UPSTREAM_FAILED."""
    jobs: list[dict[str, Any]] = [
        {"name": "ok", "type": "script", "runtime": "bash", "script": "true"},
        {"name": "ok2", "type": "script", "runtime": "bash", "script": "true"},
        {"name": "bad", "type": "script", "runtime": "bash", "script": "exit 1"},
        {"name": "skip", "type": "script", "runtime": "bash", "script": "true",
         "needs": [{"job": "ok", "on": "failure"}]},
        {"name": "uf", "type": "script", "runtime": "bash", "script": "true", "needs": ["bad"]},
    ]
    expected: dict[str, str] = {}
    for rule in RULES:
        for mix, ups in MIXES.items():
            name = f"{rule}__{mix}"
            jobs.append({"name": name, "type": "script", "runtime": "bash", "script": "true",
                         "run_if": rule, "needs": ups})
            decision = gate.decide(rule, [gate.Edge(u) for u in ups],
                                   {u: gate.Upstream(u, OUTCOMES[u]) for u in ups})
            expected[name] = "COMPLETED" if decision.run else str(decision.state)
    create_workflow(api, {"name": "run-if-matrix", "settings": {"max_parallel_jobs": 8},
                          "jobs": jobs})
    run = run_workflow(api, "run-if-matrix", timeout=240)
    got = {j["name"]: j["state"] for j in run["jobs"]}
    assert {n: got[n] for n in OUTCOMES} == OUTCOMES
    assert {n: got[n] for n in expected} == expected
    # spot checks straight from Airflow's documented behaviour
    assert got["all_success__ok_bad"] == "UPSTREAM_FAILED"
    assert got["all_success__ok_skip"] == "SKIPPED"
    assert got["one_failed__bad_uf"] == "COMPLETED"
    assert got["all_failed__bad_uf"] == "COMPLETED"
    assert got["none_failed_min_one_success__ok_skip"] == "COMPLETED"
    assert got["none_failed_min_one_success__skip_only"] == "SKIPPED"
    assert got["at_least_one_success__ok_bad"] == "COMPLETED"
    reasons = {j["name"]: j["reason"] for j in run["jobs"]}
    assert "all_success" in reasons["all_success__ok_bad"] and "bad=FAILED" in reasons["all_success__ok_bad"]


@pytest.mark.parametrize(
    ("doc", "needle", "job"),
    [
        ({"name": "bad-cycle", "jobs": [
            {"name": "a", "runtime": "bash", "script": "true", "needs": ["b"]},
            {"name": "b", "runtime": "bash", "script": "true", "needs": ["a"]}]},
         "cycle", "a"),
        ({"name": "bad-needs", "jobs": [
            {"name": "a", "runtime": "bash", "script": "true", "needs": ["ghost"]}]},
         "unknown job 'ghost'", "a"),
        ({"name": "bad-dup", "jobs": [
            {"name": "a", "runtime": "bash", "script": "true"},
            {"name": "a", "runtime": "bash", "script": "true"}]},
         "duplicate job name 'a'", "a"),
        ({"name": "bad-template", "jobs": [
            {"name": "a", "runtime": "bash", "script": "true", "env": {"X": "{{ inputs.x"}}]},
         "does not parse", "a"),
        ({"name": "bad-ref", "jobs": [
            {"name": "a", "runtime": "bash", "script": "true",
             "env": {"X": "{{ jobs.nope.output }}"}}]},
         "unknown job 'nope'", "a"),
    ],
)
def test_validation_errors_are_422_and_store_nothing(
    api: httpx.Client, doc: dict[str, Any], needle: str, job: str
) -> None:
    response = api.post("/workflows", json=doc)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["code"] == "invalid_workflow"
    assert needle in error["message"]
    assert any(p.get("job") == job for p in error["details"])
    if needle == "cycle":
        assert "a -> b -> a" in error["message"] or "b -> a -> b" in error["message"]
    assert api.get(f"/workflows/{doc['name']}").status_code == 404
    assert doc["name"] not in [w["name"] for w in api.get("/workflows").json()]


def test_bad_bodies_get_clear_errors(api: httpx.Client) -> None:
    response = api.post("/workflows", content=b"name: [unclosed",
                        headers={"Content-Type": "application/yaml"})
    assert response.status_code == 422
    assert "YAML" in response.json()["error"]["message"]
    response = api.post("/workflows", json={"name": "x", "jobs": [{"name": "a", "runtime": "perl",
                                                                   "script": "1"}]})
    assert response.status_code == 422
    assert response.json()["error"]["details"][0]["job"] == "a"
    assert api.get("/workflows/nope").json()["error"]["code"] == "not_found"


def test_run_inputs_are_validated(api: httpx.Client) -> None:
    create_workflow(api, (EXAMPLES / "document-analysis.yaml").read_text())
    cases = [
        ({"document_text": 5, "analysis_depth": "basic"}, "document_text"),
        ({"document_text": "x", "analysis_depth": "deep"}, "analysis_depth"),
        ({"analysis_depth": "basic"}, "document_text"),
    ]
    for inputs, name in cases:
        response = api.post("/workflows/analyze-document/runs", json={"inputs": inputs})
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["code"] == "invalid_inputs" and name in error["message"]
        assert error["details"][0]["input"] == name
    assert api.get("/workflows/analyze-document/runs").json() == []
    run = run_workflow(api, "analyze-document",
                       {"document_text": "  the quick brown fox  ", "analysis_depth": "detailed"})
    assert run["state"] == "COMPLETED", run
    assert run["outputs"]["final_analysis"] == {"summary": "the quick brown fox",
                                                "level": "detailed", "words": 4}


def test_hostile_input_reaches_bash_as_inert_text(api: httpx.Client, shared_dir: Path) -> None:
    pwned = shared_dir / "pwned"
    hostile = f"$(touch {pwned}) `touch {pwned}` \"; touch {pwned}; echo \" ' && touch {pwned}"
    create_workflow(api, {
        "name": "inert-input",
        "inputs": {"text": {"type": "string"}},
        "jobs": [{"name": "echo", "runtime": "bash", "env": {"TEXT": "{{ inputs.text }}"},
                  "params": {"text": "{{ inputs.text }}"},
                  "script": 'source "$FLOWFORGE_HELPERS/flowforge.sh"\n'
                            'printf "%s" "$TEXT" > "$FLOWFORGE_JOB_DIR/seen.txt"\n'
                            'ff_output "$(python3 -c \'import json,sys; '
                            'print(json.dumps({"text": open(sys.argv[1]).read()}))\' '
                            '"$FLOWFORGE_JOB_DIR/seen.txt")"'}],
    })
    run = run_workflow(api, "inert-input", {"text": hostile})
    assert run["state"] == "COMPLETED", run
    assert run["jobs"][0]["output"] == {"text": hostile}
    assert not pwned.exists()


def test_cancel_a_running_run(api: httpx.Client, shared_dir: Path) -> None:
    pidfile = shared_dir / "pid"
    create_workflow(api, {
        "name": "long-runner",
        "inputs": {"pidfile": {"type": "string"}},
        "jobs": [{"name": "sleeper", "runtime": "bash", "env": {"PIDFILE": "{{ inputs.pidfile }}"},
                  "script": 'sleep 300 &\necho $! > "$PIDFILE"\nwait'}],
    })
    run_id = api.post("/workflows/long-runner/runs",
                      json={"inputs": {"pidfile": str(pidfile)}}).json()["run_id"]
    deadline = time.monotonic() + 90
    while not (pidfile.exists() and pidfile.read_text().strip()):
        assert time.monotonic() < deadline, api.get(f"/runs/{run_id}").json()
        time.sleep(0.3)
    pid = int(pidfile.read_text())
    response = api.post(f"/runs/{run_id}/cancel")
    assert response.status_code == 202, response.text
    run = wait_run(api, run_id, timeout=90)
    assert run["state"] == "CANCELLED"
    assert run["jobs"][0]["state"] == "CANCELLED"
    deadline = time.monotonic() + 30
    while _alive(pid):
        assert time.monotonic() < deadline, f"job process {pid} survived the cancel"
        time.sleep(0.5)
    again = api.post(f"/runs/{run_id}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "conflict"


def _flow_run_in(stack: Stack, workflow: str, state: State[Any],
                 job_variables: dict[str, Any] | None = None) -> str:
    """A flow run of `workflow`'s deployment made straight in Prefect, in `state` (the worker
    takes Scheduled runs that are due, and only those). Through Prefect's client, which
    retries the 503s a loaded SQLite server answers."""
    with SyncPrefectClient(stack.prefect_url, auth_string=stack.prefect_auth) as client:
        deployment = client.read_deployment_by_name(f"{workflow}/{workflow}")
        made = client.create_flow_run_from_deployment(
            deployment.id, state=state, tags=["flowforge"], job_variables=job_variables)
        return str(made.id)


def _force_state(stack: Stack, run_id: str, state: State[Any]) -> None:
    with SyncPrefectClient(stack.prefect_url, auth_string=stack.prefect_auth) as client:
        client.set_flow_run_state(UUID(run_id), state, force=True)


def _replay(api: httpx.Client, stack: Stack, name: str, marker: Path,
            states: Callable[[datetime], list[State[Any]]]
            ) -> tuple[str, subprocess.CompletedProcess[bytes]]:
    """Workflow `name` (one job touching `marker`), a run of it scheduled a day ahead (no
    worker takes it), forced through `states(that time)`, then started the way a worker
    starts it: `python -m prefect.engine` in the project directory."""
    create_workflow(api, {"name": name, "jobs": [
        {"name": "a", "runtime": "bash", "env": {"MARKER": str(marker)},
         "script": 'touch "$MARKER"'}]})
    later = datetime.now(UTC) + timedelta(days=1)
    run_id = _flow_run_in(stack, name, Scheduled(scheduled_time=later))
    for state in states(later):
        _force_state(stack, run_id, state)
    started = subprocess.run(
        [sys.executable, "-m", "prefect.engine"], cwd=stack.home / "project",
        env=stack.prefect_env(PREFECT__FLOW_RUN_ID=run_id), capture_output=True, timeout=120)
    return run_id, started


def test_a_run_cancelled_while_pending_ends_cancelled(api: httpx.Client, stack: Stack,
                                                      shared_dir: Path) -> None:
    """Cancelled between the worker taking it and its process starting (held here by stopping
    the warm runner's fork server, SIGSTOP): Prefect's engine refuses to start a Cancelling
    run, and the worker's pending-run cancellation ends it. Prefect's own process worker,
    whose window is an interpreter start, is tested alike in test_warm_runner.py."""
    marker = shared_dir / "ran"
    create_workflow(api, {"name": "pending-cancel", "jobs": [
        {"name": "a", "runtime": "bash", "env": {"MARKER": str(marker)},
         "script": 'touch "$MARKER"'}]})
    server = fork_server(stack)
    before = set(children_of(server))
    os.kill(server, signal.SIGSTOP)
    try:
        run_id = _flow_run_in(stack, "pending-cancel", Scheduled())
        deadline = time.monotonic() + 60
        while api.get(f"/runs/{run_id}").json()["state"] != "PENDING":
            assert time.monotonic() < deadline, api.get(f"/runs/{run_id}").json()
            time.sleep(0.1)
        response = api.post(f"/runs/{run_id}/cancel")
        assert response.status_code == 202, response.text
    finally:
        os.kill(server, signal.SIGCONT)
    run = wait_run(api, run_id, timeout=60)
    assert run["state"] == "CANCELLED", run
    deadline = time.monotonic() + 30
    while set(children_of(server)) - before:
        assert time.monotonic() < deadline, "the cancelled run's process survived the cancel"
        time.sleep(0.5)
    assert not marker.exists()


def test_a_run_cancelled_before_its_process_started_runs_no_job(
        api: httpx.Client, stack: Stack, shared_dir: Path) -> None:
    """The race the worker leaves open: it marks a pending run Cancelled before it knows the
    run's process, which starts anyway (Prefect lets a flow run leave Cancelled for Running).
    The flow run must see the cancel and end Cancelled without running a job."""
    marker = shared_dir / "ran"
    run_id, started = _replay(api, stack, "late-start", marker,
                              lambda later: [Pending(), Cancelling(), Cancelled()])
    run = api.get(f"/runs/{run_id}").json()
    assert run["state"] == "CANCELLED", (run, started.stderr.decode()[-2000:])
    assert run["message"] == "cancelled before it started"
    assert not marker.exists()
    assert all(job["attempts"] == 0 for job in run["jobs"]), run


def test_a_repaired_cancelled_run_runs_again(api: httpx.Client, stack: Stack,
                                            shared_dir: Path) -> None:
    """Scheduled again after the cancel (a repair or a Prefect retry): it goes on."""
    marker = shared_dir / "ran-again"
    run_id, _ = _replay(api, stack, "cancel-then-retry", marker, lambda later: [
        Pending(), Cancelling(), Cancelled(), Scheduled(scheduled_time=later), Pending()])
    assert api.get(f"/runs/{run_id}").json()["state"] == "COMPLETED"
    assert marker.exists()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().split()[2] == "Z")


def test_delete_removes_the_deployment(api: httpx.Client, stack: Stack) -> None:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.exceptions import ObjectNotFound

    create_workflow(api, {"name": "short-lived", "jobs": [
        {"name": "a", "runtime": "bash", "script": "true"}]})
    with SyncPrefectClient(stack.prefect_url, auth_string=stack.prefect_auth) as client:
        assert client.read_deployment_by_name("short-lived/short-lived").id
        assert api.delete("/workflows/short-lived").status_code == 204
        with pytest.raises(ObjectNotFound):
            client.read_deployment_by_name("short-lived/short-lived")
    assert api.get("/workflows/short-lived").status_code == 404
    assert not (stack.home / "project" / "flows" / "short_lived.py").exists()


def test_large_run_is_complete_when_terminal(api: httpx.Client, stack: Stack) -> None:
    """A 400-job run reads complete from GET /runs/{id} the moment Prefect calls it terminal."""
    jobs = [{"name": "root", "runtime": "bash", "script": "true"}]
    jobs += [{"name": f"leaf{i:03d}", "runtime": "bash", "script": "true", "needs": ["root"]}
             for i in range(398)]
    jobs.append({"name": "sink", "runtime": "bash", "script": "true",
                 "needs": [j["name"] for j in jobs[1:]]})
    create_workflow(api, {"name": "wide", "settings": {"max_parallel_jobs": 8}, "jobs": jobs})
    run_id = api.post("/workflows/wide/runs", json={"inputs": {}}).json()["run_id"]
    from prefect.client.orchestration import SyncPrefectClient

    with SyncPrefectClient(stack.prefect_url, auth_string=stack.prefect_auth) as client:
        deadline = time.monotonic() + 300
        while True:
            flow_run = client.read_flow_run(run_id)
            if flow_run.state and flow_run.state.is_final():
                break
            assert time.monotonic() < deadline
            time.sleep(0.2)
    run = api.get(f"/runs/{run_id}").json()
    assert run["state"] == "COMPLETED"
    assert run["progress"] == {"done": 400, "total": 400}
    assert all(j["state"] == "COMPLETED" for j in run["jobs"])
    assert run["state"] in TERMINAL
