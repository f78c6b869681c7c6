"""Control flow on the real stack: the old plan's examples as workflows.

Branches on a condition job, a for-each fan-out 3 at a time, polling until done, cleanup with
`one_failed`, fail_fast cancelling a sibling, a run limit of 1 queuing the second run, global
concurrency limits, and repair / rerun of a finished run.
"""

from __future__ import annotations

import os
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import Stack, create_workflow, jobs_by_name, run_workflow, wait_run

pytestmark = pytest.mark.integration
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def ts(value: str) -> datetime:
    return datetime.fromisoformat(value)


def start(api: httpx.Client, name: str, inputs: dict[str, Any] | None = None) -> str:
    response = api.post(f"/workflows/{name}/runs", json={"inputs": inputs or {}})
    assert response.status_code == 201, response.text
    run_id: str = response.json()["run_id"]
    return run_id


def task_run_names(stack: Stack, run_id: str, expected: set[str]) -> set[str]:
    """Prefect's task-run names of a run, once the server has recorded `expected` (it lags)."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    deadline = time.monotonic() + 60
    with SyncPrefectClient(stack.prefect_url, auth_string=stack.prefect_auth) as client:
        while True:
            names = {t.name for t in client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])))}
            if expected <= names or time.monotonic() > deadline:
                return names
            time.sleep(1)


BRANCHES = """
name: validate-branches
inputs:
  rows: {type: integer}
jobs:
  - name: validation
    runtime: python
    script: |
      import flowforge_helpers as ff
      rows = ff.input()["inputs"]["rows"]
      ff.output({"rows": rows, "valid": rows > 0})
  - name: is_valid
    type: condition
    needs: [validation]
    if: "{{ jobs.validation.output.valid and inputs.rows < 1000 }}"
  - name: process
    runtime: bash
    needs: [{job: is_valid, on: true}]
    env: {ROWS: "{{ jobs.validation.output.rows }}"}
    script: echo "processing $ROWS rows"
  - name: send_alert
    runtime: bash
    needs: [{job: is_valid, on: false}]
    script: echo "invalid input"
"""


def test_condition_job_takes_one_branch(api: httpx.Client) -> None:
    create_workflow(api, BRANCHES)
    good = jobs_by_name(run_workflow(api, "validate-branches", {"rows": 5}))
    assert good["is_valid"]["state"] == "COMPLETED"
    assert good["is_valid"]["output"] == {"result": True} and good["is_valid"]["condition"] is True
    assert (good["process"]["state"], good["send_alert"]["state"]) == ("COMPLETED", "SKIPPED")
    assert "is_valid on false" in good["send_alert"]["reason"]

    bad_run = run_workflow(api, "validate-branches", {"rows": 0})
    assert bad_run["state"] == "COMPLETED", bad_run
    bad = jobs_by_name(bad_run)
    assert bad["is_valid"]["output"] == {"result": False}
    assert (bad["process"]["state"], bad["send_alert"]["state"]) == ("SKIPPED", "COMPLETED")


def test_condition_runtime_error_fails_the_job(api: httpx.Client) -> None:
    create_workflow(api, {"name": "bad-condition", "inputs": {"blob": {"type": "string"}},
                          "jobs": [{"name": "check", "type": "condition",
                                    "if": "{{ (inputs.blob | fromjson).ok }}"}]})
    run = run_workflow(api, "bad-condition", {"blob": "{not json"})
    assert run["state"] == "FAILED"
    check = jobs_by_name(run)["check"]
    assert check["state"] == "FAILED" and "if: template failed" in check["error"]


FANOUT = """
name: fanout
inputs:
  dir: {type: string}
jobs:
  - name: list_files
    runtime: python
    script: |
      import os, flowforge_helpers as ff
      d = ff.input()["inputs"]["dir"]
      ff.output({"files": sorted(os.path.join(d, f) for f in os.listdir(d))})
  - name: process_file
    runtime: python
    needs: [list_files]
    for_each: "{{ jobs.list_files.output.files }}"
    max_parallel: 3
    env: {ITEM: "{{ item }}"}
    script: |
      import os, time, flowforge_helpers as ff
      given = ff.input()  # the shared part (inputs, upstream outputs) is encoded once per job
      path = given["item"]
      assert path == os.environ["ITEM"] and os.path.dirname(path) == given["inputs"]["dir"]
      assert path in given["jobs"]["list_files"]["output"]["files"]
      assert given["jobs"]["list_files"]["state"] == "COMPLETED" and given["trigger"]["type"]
      start = time.time(); time.sleep(1)
      ff.output({"file": os.path.basename(path), "lines": len(open(path).readlines()),
                 "start": start, "end": time.time()})
  - name: consolidate
    runtime: python
    needs: [process_file]
    params: {results: "{{ jobs.process_file.output }}"}
    script: |
      import flowforge_helpers as ff
      results = ff.input()["params"]["results"]
      ff.output({"files": [r["file"] for r in results], "lines": sum(r["lines"] for r in results)})
  - name: nothing_to_do
    runtime: bash
    for_each: []
    script: exit 1
  - name: partial
    runtime: bash
    for_each: [1, 2, 3]
    allow_partial: true
    env: {N: "{{ item }}"}
    script: '[ "$N" != 2 ]'
  - name: strict
    runtime: bash
    for_each: ["a", "b"]
    continue_on_error: true
    env: {X: "{{ item }}"}
    script: '[ "$X" = a ]'
"""


def test_for_each_fans_out_three_at_a_time(api: httpx.Client, stack: Stack,
                                           shared_dir: Path) -> None:
    for i in range(5):
        (shared_dir / f"file{i}.csv").write_text("x\n" * (i + 1))
    create_workflow(api, FANOUT)
    run = run_workflow(api, "fanout", {"dir": str(shared_dir)})
    assert run["state"] == "COMPLETED", run
    jobs = jobs_by_name(run)
    items = jobs["process_file"]["output"]
    assert [r["file"] for r in items] == [f"file{i}.csv" for i in range(5)]  # item order
    assert jobs["process_file"]["items"] == {"total": 5, "done": 5, "failed": 0}
    # at most 3 at a time, and they did overlap
    moments = sorted({r["start"] for r in items} | {r["end"] for r in items})
    running = [sum(r["start"] <= t < r["end"] for r in items) for t in moments]
    assert max(running) == 3
    assert jobs["consolidate"]["output"] == {"files": [f"file{i}.csv" for i in range(5)],
                                             "lines": 15}
    assert (jobs["nothing_to_do"]["state"], jobs["nothing_to_do"]["output"]) == ("COMPLETED", [])
    assert jobs["partial"]["state"] == "COMPLETED"
    assert jobs["partial"]["output"] == [None, None, None]  # bash items output nothing
    assert jobs["partial"]["items"]["failed"] == 1 and "1" in jobs["partial"]["item_errors"]
    assert jobs["strict"]["state"] == "FAILED"
    assert "1 of 2 items failed; first: strict[1]" in jobs["strict"]["error"]

    names = task_run_names(stack, run["id"], {f"process_file[{i}]" for i in range(5)})
    assert {f"process_file[{i}]" for i in range(5)} <= names
    assert {"partial[0]", "partial[1]", "partial[2]"} <= task_run_names(
        stack, run["id"], {"partial[2]"})


POLL = """
name: poll-and-clean
inputs:
  counter: {type: string}
jobs:
  - name: wait_done
    runtime: bash
    until: "{{ output.status == 'done' }}"
    interval: 0.2
    max_attempts: 10
    env: {COUNTER: "{{ inputs.counter }}"}
    script: |
      source "$FLOWFORGE_HELPERS/flowforge.sh"
      echo x >> "$COUNTER"
      n=$(wc -l < "$COUNTER")
      if [ "$n" -ge 3 ]; then ff_output '{"status": "done"}'; else ff_output '{"status": "running"}'; fi
  - name: never_done
    runtime: bash
    until: "{{ output.status == 'done' }}"
    interval: 0.1
    max_attempts: 3
    script: |
      source "$FLOWFORGE_HELPERS/flowforge.sh"
      ff_output '{"status": "running"}'
  - name: flaky
    runtime: bash
    retries: 2
    retry_delay: 0.2
    backoff: exponential
    jitter: 0.1
    env: {COUNTER: "{{ inputs.counter }}.flaky"}
    script: 'echo x >> "$COUNTER"; [ "$(wc -l < "$COUNTER")" -ge 3 ]'
  - name: cleanup
    runtime: bash
    needs: [wait_done, never_done, flaky]
    run_if: one_failed
    script: echo cleaning up
"""


def test_poll_until_done_backoff_and_cleanup_on_failure(api: httpx.Client,
                                                       shared_dir: Path) -> None:
    create_workflow(api, POLL)
    counter = shared_dir / "counter"
    run = run_workflow(api, "poll-and-clean", {"counter": str(counter)})
    assert run["state"] == "FAILED"
    jobs = jobs_by_name(run)
    assert jobs["wait_done"]["state"] == "COMPLETED" and jobs["wait_done"]["polls"] == 3
    assert jobs["wait_done"]["output"] == {"status": "done"}
    assert counter.read_text().count("x") == 3
    never = jobs["never_done"]
    assert never["state"] == "FAILED" and never["polls"] == 3
    assert "still false after 3 attempts" in never["error"]
    assert jobs["flaky"]["state"] == "COMPLETED" and jobs["flaky"]["attempts"] == 3
    assert jobs["cleanup"]["state"] == "COMPLETED"  # one_failed: never_done failed


def test_fail_fast_cancels_a_running_sibling(api: httpx.Client, tmp_path: Path) -> None:
    marker = tmp_path / "finished"
    create_workflow(api, {
        "name": "fail-fast",
        "settings": {"fail_fast": True},
        "inputs": {"marker": {"type": "string"}},
        "jobs": [
            {"name": "slow", "runtime": "bash", "env": {"MARKER": "{{ inputs.marker }}"},
             "script": 'sleep 30; touch "$MARKER"'},
            {"name": "boom", "runtime": "bash", "script": "sleep 1; exit 3"},
            {"name": "after_slow", "runtime": "bash", "needs": ["slow"], "script": "echo no"},
            {"name": "after_boom", "runtime": "bash", "needs": [{"job": "boom", "on": "failure"}],
             "script": "echo no"},
        ],
    })
    began = time.monotonic()
    run = run_workflow(api, "fail-fast", {"marker": str(marker)})
    assert time.monotonic() - began < 25
    assert run["state"] == "FAILED"
    jobs = jobs_by_name(run)
    assert jobs["boom"]["state"] == "FAILED"
    assert jobs["slow"]["state"] == "CANCELLED"
    assert jobs["slow"]["reason"] == "fail_fast: job 'boom' failed"
    for name in ("after_slow", "after_boom"):
        assert jobs[name]["state"] == "SKIPPED" and "fail_fast" in jobs[name]["reason"]
    assert not marker.exists()


def item_task_runs(stack: Stack, job: str, **scope: Any) -> int:
    """How many task runs named `job[...]` Prefect has recorded in `scope` (its count
    endpoint's `flow_runs` / `flows` filters); a count, not a read: these jobs have hundreds."""
    query = {**scope, "task_runs": {"name": {"like_": f"{job}["}}}
    response = stack.prefect_http().post("/task_runs/count", json=query)
    response.raise_for_status()
    return int(response.json())


def test_fail_fast_cancels_a_large_for_each_s_queued_items(api: httpx.Client,
                                                          stack: Stack) -> None:
    """`.map()` queues every item at once. A failure elsewhere used to leave each queued item
    to go through Prefect only to fail at once: a failed task run per item, and the run ended
    10 s after the failure for 2,300 of them. Now the queued items are cancelled before they
    reach Prefect: no task run, counted as `not_started`, and the run ends promptly."""
    total = 600
    create_workflow(api, {
        "name": "fail-fast-map",
        "settings": {"fail_fast": True, "execution": "dag"},
        "jobs": [
            {"name": "boom", "runtime": "bash", "script": "sleep 3; exit 3"},
            {"name": "each", "runtime": "bash", "script": "sleep 0.2",
             "for_each": f"{{{{ range({total}) | list }}}}", "max_parallel": 4},
        ],
    })
    run = run_workflow(api, "fail-fast-map")
    assert run["state"] == "FAILED"
    jobs = jobs_by_name(run)
    each = jobs["each"]
    assert each["state"] == "CANCELLED" and each["reason"] == "fail_fast: job 'boom' failed"
    items = each["items"]
    assert items["not_started"] > total // 2, items  # 4 at a time, 0.2 s each: ~60 by then
    assert items["done"] + items["not_started"] == total
    assert "items not started" in each["error"]
    # The job ended with the run's stop, not after working through the queue.
    ended = ts(each["ended_at"]) - ts(jobs["boom"]["ended_at"])
    assert ended.total_seconds() < 20, ended  # a sanity bound: the queue alone took ~30 s
    in_run = {"flow_runs": {"id": {"any_": [run["id"]]}}}
    deadline = time.monotonic() + 120  # the server records task runs from events: it lags
    while (count := item_task_runs(stack, "each", **in_run)) < items["done"] \
            and time.monotonic() < deadline:
        time.sleep(1)
    assert count == items["done"], (count, items)  # not-started items left no task run


_DIRECT_RUN = """
import asyncio, json, runpy, sys
from pathlib import Path
from flowforge.controlplane.compiler import compile_workflow
from flowforge.core.validation import load_workflow
compiled = compile_workflow(load_workflow(json.loads(sys.argv[1])))
flow = runpy.run_path(str(compiled.write(Path(sys.argv[2]))))[compiled.function]
asyncio.run(flow())
"""


def test_sigterm_to_a_directly_run_flow_drops_the_queued_items(stack: Stack,
                                                               tmp_path: Path) -> None:
    """A flow run called directly (not by a worker) that gets SIGTERM mid for-each: the
    queued items used to go through Prefect one by one before the process could exit (22 s
    for 3,000), each a task run; now they are cancelled and leave none."""
    import json
    import signal
    import subprocess
    import sys


    total, name = 2000, f"sigterm-map-{tmp_path.name[-8:]}"
    document = {"name": name, "jobs": [
        {"name": "each", "runtime": "bash", "script": "sleep 0.05",
         "for_each": f"{{{{ range({total}) | list }}}}", "max_parallel": 10}]}
    proc = subprocess.Popen(
        [sys.executable, "-c", _DIRECT_RUN, json.dumps(document), str(tmp_path / "flows")],
        env=stack.prefect_env(), stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True)
    in_flow = {"flows": {"name": {"any_": [name]}}}
    deadline = time.monotonic() + 120
    while item_task_runs(stack, "each", **in_flow) < 20 and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.5)  # some items have run
    assert proc.poll() is None, proc.communicate()[0][-3000:]
    proc.send_signal(signal.SIGTERM)
    output = proc.communicate(timeout=300)[0]
    assert proc.returncode != 0, output[-3000:]
    time.sleep(5)  # task runs are recorded from events: let the last ones land
    assert 20 <= item_task_runs(stack, "each", **in_flow) < total // 2, output[-3000:]


def test_job_directories_go_under_flowforge_job_root(stack: Stack, tmp_path: Path,
                                                    shared_dir: Path) -> None:
    """FLOWFORGE_JOB_ROOT on the worker side moves local jobs' directories (for-each items
    too) and nothing else: the jobs' own TMPDIR is untouched, and the directories go at the
    end as before."""
    import json
    import subprocess
    import sys


    root, seen = tmp_path / "jobs", shared_dir / "seen.txt"
    line = f'echo "$FLOWFORGE_JOB_DIR $PWD ${{TMPDIR:-unset}}" >> {seen}'
    document = {"name": f"job-root-{tmp_path.name[-8:]}", "jobs": [
        {"name": "one", "runtime": "bash", "script": line},
        {"name": "each", "runtime": "bash", "script": line, "needs": ["one"],
         "for_each": "{{ [1, 2, 3] }}", "max_parallel": 3}]}
    out = subprocess.run(
        [sys.executable, "-c", _DIRECT_RUN, json.dumps(document), str(tmp_path / "flows")],
        env=stack.prefect_env(FLOWFORGE_JOB_ROOT=str(root)),
        capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    rows = [row.split() for row in seen.read_text().splitlines()]
    assert len(rows) == 4
    for job_dir, cwd, tmpdir in rows:
        assert Path(job_dir).parent == root and cwd == job_dir, rows
        assert tmpdir == os.environ.get("TMPDIR", "unset")
    assert list(root.iterdir()) == []  # removed when each job ended

    bad = subprocess.run(
        [sys.executable, "-c", _DIRECT_RUN, json.dumps(document), str(tmp_path / "flows")],
        env=stack.prefect_env(FLOWFORGE_JOB_ROOT="relative/jobs"),
        capture_output=True, text=True, timeout=300)
    assert bad.returncode != 0 and "job_root" in bad.stdout + bad.stderr
    assert "must be an absolute path" in bad.stdout + bad.stderr


def test_run_limit_of_one_queues_the_second_run(api: httpx.Client) -> None:
    create_workflow(api, {
        "name": "one-at-a-time",
        "settings": {"max_concurrent_runs": 1, "on_limit": "queue"},
        "jobs": [{"name": "hold", "runtime": "bash", "script": "sleep 2"}],
    })
    first, second = start(api, "one-at-a-time"), start(api, "one-at-a-time")
    runs = [wait_run(api, first, 180), wait_run(api, second, 180)]
    assert [r["state"] for r in runs] == ["COMPLETED", "COMPLETED"]
    spans = sorted((ts(r["jobs"][0]["started_at"]), ts(r["jobs"][0]["ended_at"])) for r in runs)
    assert spans[1][0] >= spans[0][1]  # the second started after the first ended


def test_run_limit_cancel_new(api: httpx.Client) -> None:
    create_workflow(api, {
        "name": "only-one",
        "settings": {"max_concurrent_runs": 1, "on_limit": "cancel_new"},
        "jobs": [{"name": "hold", "runtime": "bash", "script": "sleep 4"}],
    })
    first = start(api, "only-one")
    deadline = time.monotonic() + 60
    while api.get(f"/runs/{first}").json()["state"] != "RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.3)
    second = start(api, "only-one")
    assert wait_run(api, second, 60)["state"] == "CANCELLED"
    assert wait_run(api, first, 60)["state"] == "COMPLETED"


def test_named_concurrency_limit_is_shared(api: httpx.Client, stack: Stack) -> None:
    create_workflow(api, {
        "name": "gpu-jobs",
        "settings": {"execution": "dag"},
        "jobs": [{"name": f"train_{i}", "runtime": "bash", "concurrency": ["ff-test-gpu"],
                  "script": "sleep 1"} for i in range(2)],
    })
    with stack.prefect_http(timeout=30) as prefect:
        limit = prefect.get("/v2/concurrency_limits/ff-test-gpu").json()
    assert limit["limit"] == 1  # created by the sync, one slot
    run = run_workflow(api, "gpu-jobs")
    assert run["state"] == "COMPLETED", run
    starts = [ts(j["started_at"]) for j in run["jobs"]]
    ends = [ts(j["ended_at"]) for j in run["jobs"]]
    # both jobs start waiting at once; holding the one slot in turn, they take 2 s or more
    assert (max(ends) - min(starts)).total_seconds() >= 2, run["jobs"]

    resized = api.put("/concurrency-limits/ff-test-gpu", json={"limit": 2})
    assert resized.status_code == 200 and resized.json()["limit"] == 2
    assert "ff-test-gpu" in [x["name"] for x in api.get("/concurrency-limits").json()]
    create_workflow(api, {"name": "gpu-jobs-2", "jobs": [  # the sync keeps the size it found
        {"name": "t", "runtime": "bash", "concurrency": ["ff-test-gpu"], "script": "true"}]})
    assert api.get("/concurrency-limits/ff-test-gpu").json()["limit"] == 2
    assert api.get("/concurrency-limits/nope-missing").status_code == 404
    assert api.put("/concurrency-limits/Bad%20Name", json={"limit": 1}).status_code == 422


REPAIR = """
name: repairable
inputs:
  dir: {type: string}
jobs:
  - name: extract
    runtime: bash
    env: {DIR: "{{ inputs.dir }}"}
    script: |
      source "$FLOWFORGE_HELPERS/flowforge.sh"
      echo x >> "$DIR/extract.count"
      ff_output '{"rows": 42}'
  - name: load_config
    runtime: bash
    env: {DIR: "{{ inputs.dir }}"}
    script: |
      source "$FLOWFORGE_HELPERS/flowforge.sh"
      echo x >> "$DIR/config.count"
      mode=$(cat "$DIR/config.txt") || exit 1
      ff_output "{\\"mode\\": \\"$mode\\"}"
  - name: transform
    runtime: bash
    needs: [extract, load_config]
    env: {ROWS: "{{ jobs.extract.output.rows }}", MODE: "{{ jobs.load_config.output.mode }}"}
    script: |
      source "$FLOWFORGE_HELPERS/flowforge.sh"
      ff_output "{\\"result\\": \\"$MODE-$ROWS\\"}"
  - name: independent
    runtime: bash
    env: {DIR: "{{ inputs.dir }}"}
    script: echo x >> "$DIR/independent.count"
"""


def test_repair_reruns_only_the_failed_job_and_its_dependants(api: httpx.Client,
                                                               shared_dir: Path) -> None:
    create_workflow(api, REPAIR)
    first = run_workflow(api, "repairable", {"dir": str(shared_dir)})
    assert first["state"] == "FAILED"
    states = {n: j["state"] for n, j in jobs_by_name(first).items()}
    assert states == {"extract": "COMPLETED", "load_config": "FAILED",
                      "transform": "UPSTREAM_FAILED", "independent": "COMPLETED"}
    (shared_dir / "config.txt").write_text("fast")  # fix the cause
    response = api.post(f"/runs/{first['id']}/repair", json={})
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["repair_of"] == first["id"]
    assert body["rerun"] == ["load_config", "transform"]
    assert body["reused"] == ["extract", "independent"]
    repaired = wait_run(api, body["run_id"])
    assert repaired["state"] == "COMPLETED", repaired
    assert repaired["trigger"]["type"] == "repair"
    assert repaired["trigger"]["repair_of"] == first["id"]
    jobs = jobs_by_name(repaired)
    assert jobs["extract"]["reused"] is True and jobs["extract"]["output"] == {"rows": 42}
    assert jobs["independent"]["reused"] is True
    assert jobs["load_config"]["reused"] is False
    assert jobs["transform"]["output"] == {"result": "fast-42"}
    # reused jobs did not run again; the fixed one did
    assert (shared_dir / "extract.count").read_text().count("x") == 1
    assert (shared_dir / "independent.count").read_text().count("x") == 1
    assert (shared_dir / "config.count").read_text().count("x") == 2

    nothing = api.post(f"/runs/{repaired['id']}/repair")
    assert nothing.status_code == 409 and "nothing to repair" in nothing.json()["error"]["message"]


def test_rerun_with_same_and_new_inputs(api: httpx.Client, tmp_path: Path) -> None:
    create_workflow(api, {
        "name": "echo-input",
        "inputs": {"word": {"type": "string"}, "times": {"type": "integer", "default": 1}},
        "jobs": [{"name": "say", "runtime": "python", "script":
                  "import flowforge_helpers as ff\ni = ff.input()['inputs']\n"
                  "ff.output(i['word'] * i['times'])"}],
    })
    first = run_workflow(api, "echo-input", {"word": "ab", "times": 2})
    same = api.post(f"/runs/{first['id']}/rerun")
    assert same.status_code == 201, same.text
    assert same.json()["rerun_of"] == first["id"]
    again = wait_run(api, same.json()["run_id"])
    assert again["jobs"][0]["output"] == "abab" and again["trigger"]["rerun_of"] == first["id"]
    changed = api.post(f"/runs/{first['id']}/rerun", json={"inputs": {"word": "z"}})
    assert wait_run(api, changed.json()["run_id"])["jobs"][0]["output"] == "zz"
    bad = api.post(f"/runs/{first['id']}/rerun", json={"inputs": {"times": "x"}})
    assert bad.status_code == 422
    assert api.post("/runs/00000000-0000-0000-0000-000000000000/rerun").status_code == 404


def test_one_prefect_client_serves_every_job_of_a_run(stack: Stack, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The generated (async) flow shares one sync Prefect client with its jobs' task threads and
    for-each items. Without it Prefect builds two per task run, each loading the CA bundle into
    a new SSL context: ~80 % of a 1,000-job run's CPU (docs/performance.md)."""
    import asyncio
    import runpy

    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_URL, temporary_settings

    from flowforge.controlplane.compiler import compile_workflow
    from flowforge.core.validation import load_workflow

    compiled = compile_workflow(load_workflow({
        "name": "shared-client",
        "jobs": [*({"name": f"j{i}", "runtime": "bash", "script": "true"} for i in range(10)),
                 {"name": "each", "runtime": "bash", "script": "true", "needs": ["j0"],
                  "for_each": "{{ range(10) | list }}", "max_parallel": 5}]}))
    flow = runpy.run_path(str(compiled.write(tmp_path / "flows")))[compiled.function]
    built: list[int] = []
    original = SyncPrefectClient.__init__

    def counting(self: SyncPrefectClient, *args: Any, **kwargs: Any) -> None:
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(SyncPrefectClient, "__init__", counting)
    with temporary_settings(updates={PREFECT_API_URL: stack.prefect_url,
                                     PREFECT_API_AUTH_STRING: stack.prefect_auth}):
        state = asyncio.run(flow(return_state=True))
    assert state.is_completed(), state
    summary = state.result()
    assert [j["state"] for j in summary["jobs"]] == ["COMPLETED"] * 11
    assert summary["jobs"][-1]["output"] == [None] * 10
    assert len(built) <= 3, f"{len(built)} sync clients for 21 task runs"  # was 2 per task run


def test_logs_of_a_large_for_each_name_every_items_job(api: httpx.Client) -> None:
    """Log lines carry their job (`each[i]`) past the first 200 task runs of the run: the
    names used to come from one read of the run's task runs, which Prefect caps at 200."""
    create_workflow(api, {"name": "many-logs", "jobs": [
        {"name": "each", "runtime": "bash", "for_each": "{{ range(230) | list }}",
         "max_parallel": 20, "env": {"ITEM": "{{ item }}"}, "script": 'echo "item $ITEM"'}]})
    run = run_workflow(api, "many-logs", timeout=300)
    assert run["state"] == "COMPLETED", run
    def named(line: dict[str, Any]) -> bool:
        return bool(line["job"] == f"each[{line['message'].split()[1]}]")

    # Prefect writes log lines in batches, and records task runs from their events, both
    # behind the run under load: a line whose task run is not recorded yet has no job.
    deadline = time.monotonic() + 180
    while True:
        lines = []
        offset = 0
        while page := api.get(f"/runs/{run['id']}/logs", params={"limit": 200, "offset": offset}).json():
            lines += [line for line in page if line["message"].startswith("item ")]
            offset += len(page)
        if (len(lines) >= 230 and all(map(named, lines))) or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert len(lines) == 230
    assert all(map(named, lines)), [line for line in lines if not named(line)][:3]


def test_templates_read_jobs_named_like_methods_and_refuse_missing_fields(api: httpx.Client) -> None:
    helpers = 'source "$FLOWFORGE_HELPERS/flowforge.sh"\n'
    create_workflow(api, {"name": "template-rules", "jobs": [
        {"name": "items", "runtime": "python",
         "script": "import flowforge_helpers as ff\nff.output({'n': 3})"},
        {"name": "get", "runtime": "bash", "needs": ["items"],
         "env": {"N": "{{ jobs.items.output.n }}"}, "script": helpers + 'ff_output "{\\"n\\": $N}"'},
        {"name": "typo", "runtime": "bash", "needs": ["items"],
         "env": {"X": "{{ jobs.items.output.nn }}"}, "script": "echo never"},
        {"name": "never", "type": "condition", "if": "{{ false }}"},
        {"name": "skipped", "runtime": "bash", "needs": [{"job": "never", "on": True}],
         "script": "echo skipped"},
        {"name": "reads_skipped", "runtime": "bash", "needs": ["skipped"], "run_if": "always",
         "env": {"V": "{{ jobs.skipped.output.rows }}"},
         "script": helpers + 'ff_output "{\\"v\\": \\"$V\\"}"'},
    ], "outputs": {"n": "{{ jobs.get.output.n }}"}})
    run = run_workflow(api, "template-rules")
    jobs = jobs_by_name(run)
    assert jobs["get"]["state"] == "COMPLETED" and jobs["get"]["output"] == {"n": 3}
    assert jobs["typo"]["state"] == "FAILED"
    assert "jobs.items.output has no field 'nn'" in jobs["typo"]["error"]
    assert "{{ jobs.items.output.nn }}" in jobs["typo"]["error"]
    assert jobs["skipped"]["state"] == "SKIPPED"
    assert jobs["reads_skipped"]["output"] == {"v": ""}  # a skipped job's output reads empty
    assert run["state"] == "FAILED" and run["outputs"] == {"n": 3}
