"""Job types beyond scripts on the real stack: http, message, workflow jobs,
variables and secrets, against real receivers on 127.0.0.1."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.conftest import Stack, create_workflow, jobs_by_name, run_workflow, wait_run
from tests.fixtures.postgres import PostgresServer
from tests.receivers import HttpTarget, SmtpTarget

pytestmark = pytest.mark.integration

TOKEN = "tok-5f3a9c1e77"  # a secret value that must never come back


@pytest.fixture(scope="module")
def target() -> Iterator[HttpTarget]:
    server = HttpTarget()
    yield server
    server.close()


@pytest.fixture
def smtp() -> Iterator[SmtpTarget]:
    server = SmtpTarget()
    yield server
    server.close()


def put_secret(api: httpx.Client, name: str, value: str) -> None:
    response = api.put(f"/secrets/{name}", json={"value": value})
    assert response.status_code == 200, response.text
    assert value not in response.text


def logs_of(api: httpx.Client, run_id: str, job: str, needle: str) -> list[dict[str, Any]]:
    """The job's log lines, waiting (Prefect writes logs in batches) until `needle` shows."""
    deadline = time.monotonic() + 30
    while True:
        lines = [line for line in api.get(f"/runs/{run_id}/logs").json() if line["job"] == job]
        if any(needle in line["message"] for line in lines) or time.monotonic() > deadline:
            return lines
        time.sleep(1)


def test_secrets_api_is_write_only(api: httpx.Client) -> None:
    put_secret(api, "ff-test-secret", "first")
    put_secret(api, "ff-test-secret", TOKEN)  # replacing is the same call
    listed = api.get("/secrets")
    assert listed.status_code == 200 and {"name": "ff-test-secret", "namespace": "default"} in listed.json()
    assert TOKEN not in listed.text
    bad = api.put("/secrets/Bad_Name", json={"value": "x"})
    assert bad.status_code == 422 and bad.json()["error"]["details"][0]["field"] == "name"
    assert api.put("/secrets/ok-name", json={}).status_code == 422
    assert api.delete("/secrets/ff-test-secret").status_code == 204
    assert api.delete("/secrets/ff-test-secret").status_code == 404
    assert "ff-test-secret" not in {s["name"] for s in api.get("/secrets").json()}


def test_http_jobs_statuses_retries_timeouts_and_auth(api: httpx.Client, target: HttpTarget) -> None:
    put_secret(api, "api-token", TOKEN)
    base = target.url
    create_workflow(api, {
        "name": "http-kinds",
        "inputs": {"page": {"type": "integer", "default": 3}},
        "jobs": [
            {"name": "echo", "type": "http", "method": "POST", "url": f"{base}/echo",
             "query": {"page": "{{ inputs.page }}"}, "json": {"page": "{{ inputs.page }}"},
             "auth": {"type": "bearer", "token": "{{ secrets['api-token'] }}"}},
            {"name": "flaky", "type": "http", "url": f"{base}/flaky/{{{{ run.id }}}}/2",
             "retries": 2, "retry_delay": 0.2},
            {"name": "missing", "type": "http", "url": f"{base}/status/404", "retries": 3,
             "continue_on_error": True},
            {"name": "slow", "type": "http", "url": f"{base}/slow/5", "timeout": 0.5,
             "continue_on_error": True},
            {"name": "use", "runtime": "python", "needs": ["echo", "flaky"],
             "env": {"PAGE": "{{ jobs.echo.output.body.json.page }}"},
             "script": "import os, flowforge_helpers as ff\nff.output({'page': int(os.environ['PAGE'])})"},
        ],
        "outputs": {"attempts": "{{ jobs.flaky.output.body.attempts }}"},
    })
    run = run_workflow(api, "http-kinds")
    jobs = jobs_by_name(run)
    assert run["state"] == "COMPLETED", run
    echo = jobs["echo"]["output"]
    assert echo["status"] == 200 and echo["body"]["query"] == {"page": "3"}
    assert echo["body"]["json"] == {"page": 3}  # a single expression keeps its type
    # the server echoed the Authorization header back: the token is masked in the output
    assert echo["body"]["headers"]["authorization"] == "Bearer ***"
    assert jobs["flaky"]["output"]["body"] == {"attempts": 3} and run["outputs"] == {"attempts": 3}
    assert jobs["missing"]["state"] == "FAILED"
    assert "answered 404 (expected 2xx)" in jobs["missing"]["error"]
    assert jobs["missing"]["attempts"] == 1  # a 4xx is not retried, whatever `retries` says
    assert jobs["slow"]["state"] == "FAILED" and "timed out after 0.5s" in jobs["slow"]["error"]
    assert jobs["use"]["output"] == {"page": 3}
    assert TOKEN not in str(run)


def test_secret_values_are_masked_in_logs_outputs_errors_and_flow(api: httpx.Client,
                                                                  stack: Stack) -> None:
    put_secret(api, "leaky", TOKEN)
    create_workflow(api, {"name": "leaky", "settings": {"execution": "dag"}, "jobs": [
        {"name": "leak", "runtime": "bash", "env": {"T": "{{ secrets.leaky }}"},
         "script": 'source "$FLOWFORGE_HELPERS/flowforge.sh"\necho "out $T"\n'
                   'ff_output "{\\"t\\": \\"$T\\"}"\necho "err $T" >&2\nexit 3'},
        {"name": "unset", "runtime": "bash", "env": {"X": "{{ secrets['never-set'] }}"},
         "script": "true"},
    ]})
    run = run_workflow(api, "leaky")
    assert "secret 'never-set' does not exist" in jobs_by_name(run)["unset"]["error"]
    job = run["jobs"][0]
    assert job["state"] == "FAILED"
    assert job["error"] == "exit code 3: err ***"
    assert TOKEN not in str(run)
    lines = logs_of(api, run["id"], "leak", "out ***")
    assert any(line["message"] == "out ***" for line in lines)
    assert any(line["message"] == "err ***" for line in lines)
    all_logs = api.get(f"/runs/{run['id']}/logs").text
    assert TOKEN not in all_logs  # also not in Prefect's own "task failed" line
    flow = api.get("/workflows/leaky/flow").text + api.get("/workflows/leaky").text
    assert TOKEN not in flow
    # Prefect's own records: the failed task run's state message, the flow run, the artifacts
    with stack.prefect_http(timeout=30) as prefect:
        flow_filter = {"flow_runs": {"id": {"any_": [run["id"]]}}}
        task_runs = prefect.post("/task_runs/filter", json=flow_filter).text
        artifacts = prefect.post("/artifacts/filter", json=flow_filter).text
        flow_run = prefect.get(f"/flow_runs/{run['id']}").text
    assert "exit code 3: err ***" in artifacts
    assert TOKEN not in task_runs + artifacts + flow_run


def test_message_jobs_json_mailto_and_stored_target(api: httpx.Client, target: HttpTarget,
                                                   smtp: SmtpTarget) -> None:
    put_secret(api, "ops-hook", f"json://127.0.0.1:{target.port}/stored")
    before = len(target.posts)
    create_workflow(api, {"name": "messages", "jobs": [
        {"name": "load", "runtime": "bash", "script": "echo 'disk full' >&2; exit 2"},
        {"name": "alert", "type": "message", "needs": [{"job": "load", "on": "failure"}],
         "to": [f"json://127.0.0.1:{target.port}/alerts",
                f"mailto://127.0.0.1:{smtp.port}?from=flowforge@example.com&to=ops@example.com"],
         "title": "load failed in {{ run.workflow }}", "body": "error: {{ jobs.load.error }}"},
        {"name": "stored", "type": "message", "needs": [{"job": "load", "on": "failure"}],
         "to": "ops-hook", "body": "via a stored target"},
    ]})
    run = run_workflow(api, "messages")
    jobs = jobs_by_name(run)
    assert jobs["alert"]["state"] == "COMPLETED", jobs["alert"]
    assert jobs["stored"]["output"] == {"delivered": ["target:ops-hook"]}
    posts = target.posts[before:]
    assert {"title": "load failed in messages", "message": "error: exit code 2: disk full"}.items() \
        <= next(p for p in posts if p.get("title")).items()
    assert any(p.get("message") == "via a stored target" for p in posts)
    mail = smtp.wait(1)[0]
    assert mail["Subject"] == "load failed in messages" and mail["To"] == "ops@example.com"
    text = "".join(part.get_payload(decode=True).decode() for part in mail.walk()
                   if not part.is_multipart())
    assert "error: exit code 2: disk full" in text


def test_variables_api_and_parallel_writes(api: httpx.Client) -> None:
    assert api.put("/variables/ff_it_seed", json={"value": {"n": 1}}).json() == {
        "key": "ff_it_seed", "value": {"n": 1}, "namespace": "default"}
    assert api.get("/variables/ff_it_seed").json()["value"] == {"n": 1}
    assert api.put("/variables/Bad Key", json={"value": 1}).status_code == 422
    too_big = api.put("/variables/ff_it_big", json={"value": "x" * 6000})
    assert too_big.status_code == 422 and "at most 5000" in too_big.text
    assert api.put("/variables/ff_it_x", json={}).status_code == 422
    api.delete("/variables/ff_it_a")
    api.delete("/variables/ff_it_same")
    writer = ("import flowforge_helpers as ff\nseed = ff.get_variable('ff_it_seed')\n"
              "ff.set_variable('ff_it_{k}', {{'from': '{k}', 'seed': seed['n']}})\n"
              "ff.set_variable('ff_it_same', '{k}')")
    create_workflow(api, {"name": "variables-parallel", "jobs": [
        {"name": "a", "runtime": "python", "script": writer.format(k="a")},
        {"name": "b", "runtime": "python", "script": writer.format(k="b")},
        {"name": "c", "runtime": "bash", "script":
         'source "$FLOWFORGE_HELPERS/flowforge.sh"\nff_set_variable ff_it_c \'{"from": "c"}\''},
        {"name": "read", "runtime": "node", "needs": ["a", "b", "c"], "script":
         "const ff = require('flowforge');\n"
         "ff.output(['a', 'b', 'c', 'same'].map(k => ff.get_variable('ff_it_' + k)));"},
    ]})
    run = run_workflow(api, "variables-parallel")
    assert run["state"] == "COMPLETED", run
    a, b, c, same = jobs_by_name(run)["read"]["output"]
    assert a == {"from": "a", "seed": 1} and b == {"from": "b", "seed": 1} and c == {"from": "c"}
    assert same in ("a", "b")  # last writer wins
    assert api.get("/variables/ff_it_same").json()["value"] == same
    assert api.delete("/variables/ff_it_seed").status_code == 204
    assert api.get("/variables/ff_it_seed").status_code == 404


def test_workflow_jobs_run_sub_runs_and_pass_outputs(api: httpx.Client, stack: Stack) -> None:
    create_workflow(api, {"name": "child-double",
                          "inputs": {"n": {"type": "integer"}},
                          "jobs": [{"name": "double", "runtime": "python", "params": {"n": "{{ inputs.n }}"},
                                    "script": "import flowforge_helpers as ff\n"
                                              "ff.output({'twice': ff.input()['params']['n'] * 2})"}],
                          "outputs": {"twice": "{{ jobs.double.output.twice }}"}})
    create_workflow(api, {"name": "child-fails", "jobs": [
        {"name": "boom", "runtime": "bash", "script": "echo 'child broke' >&2; exit 4"}]})
    create_workflow(api, {"name": "child-sleeps", "jobs": [
        {"name": "nap", "runtime": "bash", "script": "sleep 60"}]})
    create_workflow(api, {"name": "parent", "inputs": {"n": {"type": "integer", "default": 21}},
                          "jobs": [
        {"name": "late", "type": "workflow", "workflow": "child-sleeps", "timeout": 6,
         "continue_on_error": True},
        {"name": "sub", "type": "workflow", "workflow": "child-double", "inputs": {"n": "{{ inputs.n }}"}},
        {"name": "fire", "type": "workflow", "workflow": "child-double", "inputs": {"n": 1}, "wait": False},
        {"name": "bad", "type": "workflow", "workflow": "child-fails", "continue_on_error": True},
        {"name": "after", "runtime": "bash", "needs": ["sub"],
         "env": {"T": "{{ jobs.sub.output.twice }}"}, "script": '[ "$T" = 42 ]'},
    ], "outputs": {"answer": "{{ jobs.sub.output.twice }}"}})
    run = run_workflow(api, "parent", timeout=180)
    jobs = jobs_by_name(run)
    assert run["state"] == "COMPLETED", run
    assert jobs["sub"]["output"] == {"twice": 42} and run["outputs"] == {"answer": 42}
    assert jobs["after"]["state"] == "COMPLETED"
    assert jobs["bad"]["state"] == "FAILED"
    assert "ended FAILED: boom: exit code 4: child broke" in jobs["bad"]["error"]
    assert jobs["late"]["state"] == "FAILED"
    assert "timed out after 6s; sub-run cancelled" in jobs["late"]["error"]
    late_id = jobs["late"]["error"].split(" run ")[1].split(":")[0]
    assert wait_run(api, late_id, timeout=60)["state"] == "CANCELLED"
    fired = wait_run(api, jobs["fire"]["output"]["run_id"])
    assert fired["workflow"] == "child-double" and fired["outputs"] == {"twice": 2}
    assert fired["trigger"]["type"] == "workflow" and fired["trigger"]["parent_run_id"] == run["id"]
    # the sub-run is linked in Prefect as a subflow of the parent run
    with stack.prefect_http(timeout=30) as prefect:
        child = prefect.get(f"/flow_runs/{fired['id']}").json()
        task_run = prefect.get(f"/task_runs/{child['parent_task_run_id']}").json()
    assert task_run["flow_run_id"] == run["id"]


def test_workflow_call_cycles_are_refused(api: httpx.Client) -> None:
    self_call = api.post("/workflows", json={"name": "loop-self", "jobs": [
        {"name": "again", "type": "workflow", "workflow": "loop-self"}]})
    assert self_call.status_code == 422 and "calls itself" in self_call.text
    create_workflow(api, {"name": "loop-b", "jobs": [{"name": "s", "runtime": "bash", "script": "true"}]})
    create_workflow(api, {"name": "loop-a", "jobs": [
        {"name": "call_b", "type": "workflow", "workflow": "loop-b"}]})
    closing = api.put("/workflows/loop-b", json={"name": "loop-b", "jobs": [
        {"name": "call_a", "type": "workflow", "workflow": "loop-a"}]})
    assert closing.status_code == 422, closing.text
    detail = closing.json()["error"]["details"][0]
    assert detail["job"] == "call_a" and detail["field"] == "jobs[0].workflow"
    assert "loop-b -> loop-a -> loop-b" in detail["message"]
    assert api.get("/workflows/loop-b").json()["spec"]["jobs"][0]["name"] == "s"  # nothing stored
    unknown = api.post("/workflows", json={"name": "calls-nobody", "jobs": [
        {"name": "x", "type": "workflow", "workflow": "no-such-workflow"}]})
    assert unknown.status_code == 422 and "unknown workflow 'no-such-workflow'" in unknown.text


def test_cancelling_a_parent_cancels_its_sub_run(api: httpx.Client) -> None:
    create_workflow(api, {"name": "child-naps", "jobs": [
        {"name": "nap", "runtime": "bash", "script": "sleep 120"}]})
    create_workflow(api, {"name": "parent-cancelled", "jobs": [
        {"name": "wait", "type": "workflow", "workflow": "child-naps"}]})
    started = api.post("/workflows/parent-cancelled/runs", json={"inputs": {}})
    parent_id = started.json()["run_id"]
    lines = logs_of(api, parent_id, "wait", "as sub-run")
    child_id = next(line["message"] for line in lines if "as sub-run" in line["message"]).split()[-1]
    deadline = time.monotonic() + 60
    while api.get(f"/runs/{child_id}").json()["state"] != "RUNNING" and time.monotonic() < deadline:
        time.sleep(0.5)
    assert api.post(f"/runs/{parent_id}/cancel").status_code == 202
    assert wait_run(api, parent_id, timeout=60)["state"] == "CANCELLED"
    assert wait_run(api, child_id, timeout=90)["state"] == "CANCELLED"


def test_sql_jobs_query_postgres_through_a_secret(api: httpx.Client,
                                                  postgres_server: PostgresServer) -> None:
    pg = postgres_server
    # The server trusts 127.0.0.1, so the password is never checked: it is here to be masked.
    password = "pw-4be8d1c9"
    put_secret(api, "warehouse-test", f"postgresql://{pg.user}:{password}@{pg.host}:{pg.port}/"
               f"{pg.database}")
    create_workflow(api, {
        "name": "sql-jobs",
        "inputs": {"region": {"type": "string", "default": "eu"}},
        "jobs": [
            {"name": "ddl", "type": "sql", "connection": "warehouse-test", "fetch": "none",
             "query": "create table if not exists ff_orders (id serial primary key, region text)"},
            {"name": "load", "type": "sql", "connection": "warehouse-test", "needs": ["ddl"],
             "query": "insert into ff_orders (region) values (%(region)s), (%(region)s) "
                      "returning id", "params": {"region": "{{ inputs.region }}"}},
            {"name": "report", "type": "sql", "connection": "warehouse-test", "fetch": "one",
             "needs": ["load"], "params": {"region": "{{ inputs.region }}"},
             "query": "select count(*) as n, %(region)s as region from ff_orders "
                      "where region = %(region)s"},
            {"name": "use", "runtime": "bash", "needs": ["report"],
             "env": {"N": "{{ jobs.report.output.row.n }}"},
             "script": 'source "$FLOWFORGE_HELPERS/flowforge.sh"; ff_output "{\\"n\\": $N}"'},
        ],
        "outputs": {"loaded": "{{ jobs.load.output.row_count }}",
                    "region": "{{ jobs.report.output.row.region }}"},
    })
    run = run_workflow(api, "sql-jobs", {"region": "apac'; drop table ff_orders; --"})
    jobs = jobs_by_name(run)
    assert run["state"] == "COMPLETED", run
    assert run["outputs"] == {"loaded": 2, "region": "apac'; drop table ff_orders; --"}
    assert jobs["report"]["output"]["row"]["n"] >= 2 and jobs["use"]["output"]["n"] >= 2
    assert jobs["ddl"]["output"] == {"row_count": None}  # DDL has no row count
    lines = logs_of(api, run["id"], "load", "row(s)")
    assert any("2 row(s)" in line["message"] for line in lines), lines
    everything = api.get(f"/runs/{run['id']}").text + str(api.get(f"/runs/{run['id']}/logs").json())
    assert password not in everything
