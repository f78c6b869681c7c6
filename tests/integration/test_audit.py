"""The audit log on the real stack: one row per run start, cancel, repair and rerun, whether a
key or a trigger (webhook, schedule, dependency) did it, read back through GET /audit; no
secret, key or webhook secret in any row; SSH servers kept to their namespace.

Everything lives in namespaces of this module's own (a random suffix), so the rows read back
are this module's. Run starts by a schedule are made the way Prefect's scheduler makes them (a
flow run of the deployment carrying the schedule's own parameters), so no test waits for a
cron minute.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.states import Scheduled

from api.services import signatures
from tests.conftest import Stack, create_workflow, free_port, wait_run

pytestmark = pytest.mark.integration

SFX = uuid.uuid4().hex[:6]
NS = f"audit-{SFX}"


@dataclass
class Ctx:
    runner_id: str
    runner_name: str
    runner_key: str
    #: Every secret value, key and webhook secret this module made: in no audit row.
    sensitive: list[str] = field(default_factory=list)


def new_key(api: httpx.Client, role: str, namespaces: list[str]) -> dict[str, Any]:
    made = api.post("/api-keys", json={"name": f"audit-{role}-{uuid.uuid4().hex[:6]}",
                                       "role": role, "namespaces": namespaces})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


@pytest.fixture(scope="module")
def ctx(stack: Stack) -> Iterator[Ctx]:
    with stack.client() as admin:
        runner = new_key(admin, "runner", [NS])
        secret = f"s3cr3t-{uuid.uuid4().hex}"
        put = admin.put("/secrets/audit-token", params={"namespace": NS}, json={"value": secret})
        assert put.status_code == 200, put.text
        yield Ctx(runner["id"], runner["name"], runner["key"],
                  sensitive=[secret, runner["key"], stack.admin_key])


def audit(api: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = api.get("/audit", params={"limit": 500, **params})
    assert response.status_code == 200, response.text
    rows: list[dict[str, Any]] = response.json()
    return rows


def wait_rows(api: httpx.Client, timeout: float = 30, **params: Any) -> list[dict[str, Any]]:
    """The rows matching `params`, once there is one: a request's row is written after its
    answer is sent, a trigger's by a loop that looks every 5 s."""
    deadline = time.monotonic() + timeout
    while not (rows := audit(api, **params)):
        assert time.monotonic() < deadline, f"no audit row {params} after {timeout}s"
        time.sleep(0.5)
    return rows


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what} not seen after {timeout}s"
        time.sleep(0.5)
    return value


def state_of(api: httpx.Client, run_id: str) -> str:
    response = api.get(f"/runs/{run_id}")
    assert response.status_code == 200, response.text
    state: str = response.json()["state"]
    return state


def bash_workflow(name: str, script: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "namespace": NS,
            "jobs": [{"name": "a", "runtime": "bash", "script": script}], **extra}


def key_row(row: dict[str, Any], ctx: Ctx, action: str, target: str, outcome: int,
            request_id: str) -> None:
    assert (row["actor"], row["actor_name"], row["action"], row["target"], row["namespace"],
            row["outcome"], row["request_id"], row["client"]) == (
        ctx.runner_id, ctx.runner_name, action, target, NS, outcome, request_id,
        "127.0.0.1"), row


def test_a_runners_start_and_cancel_are_rows_naming_the_key_and_run(
        api: httpx.Client, stack: Stack, ctx: Ctx) -> None:
    name = f"aud-sleep-{SFX}"
    create_workflow(api, bash_workflow(name, "sleep 120"))
    with stack.client(ctx.runner_key) as runner:
        started_id = f"start-{uuid.uuid4().hex[:8]}"
        started = runner.post(f"/workflows/{name}/runs", json={"inputs": {}},
                              headers={"X-Request-Id": started_id})
        assert started.status_code == 201, started.text
        run_id = started.json()["run_id"]
        (row,) = wait_rows(api, action="start_run", target=f"run:{run_id}")
        key_row(row, ctx, "start_run", f"run:{run_id}", 201, started_id)
        at = datetime.fromisoformat(row["at"])
        at = at if at.tzinfo else at.replace(tzinfo=UTC)
        assert abs(datetime.now(UTC) - at) < timedelta(minutes=5), row

        wait_for(lambda: state_of(api, run_id) == "RUNNING", 90, "the run RUNNING")
        cancel_id = f"cancel-{uuid.uuid4().hex[:8]}"
        cancelled = runner.post(f"/runs/{run_id}/cancel", headers={"X-Request-Id": cancel_id})
        assert cancelled.status_code == 202, cancelled.text
        (row,) = wait_rows(api, action="cancel_run", target=f"run:{run_id}")
        key_row(row, ctx, "cancel_run", f"run:{run_id}", 202, cancel_id)
        assert wait_run(api, run_id, 90)["state"] == "CANCELLED"
        # A refused start is a row too, with its outcome
        viewer = new_key(api, "viewer", [NS])
        ctx.sensitive.append(viewer["key"])
        with stack.client(viewer["key"]) as refused:
            assert refused.post(f"/workflows/{name}/runs", json={}).status_code == 403
        (row,) = wait_rows(api, action="start_run", actor=viewer["id"])
        assert row["outcome"] == 403 and row["actor_name"] == viewer["name"], row


def test_repair_and_rerun_of_a_failed_run_are_rows(api: httpx.Client, stack: Stack,
                                                   ctx: Ctx) -> None:
    name = f"aud-fail-{SFX}"
    create_workflow(api, bash_workflow(name, "exit 3"))
    with stack.client(ctx.runner_key) as runner:
        made = runner.post(f"/workflows/{name}/runs", json={"inputs": {}})
        assert made.status_code == 201, made.text
        failed = made.json()["run_id"]
        assert wait_run(api, failed)["state"] == "FAILED"
        for action in ("repair", "rerun"):
            request_id = f"{action}-{uuid.uuid4().hex[:8]}"
            response = runner.post(f"/runs/{failed}/{action}", json={},
                                   headers={"X-Request-Id": request_id})
            assert response.status_code == 201, response.text
            (row,) = wait_rows(api, action=f"{action}_run", target=f"run:{failed}")
            key_row(row, ctx, f"{action}_run", f"run:{failed}", 201, request_id)
            assert wait_run(api, response.json()["run_id"])["state"] == "FAILED"


def test_a_webhook_delivery_has_its_request_row_and_its_run_start_row(
        api: httpx.Client, stack: Stack, ctx: Ctx) -> None:
    name = f"aud-hook-{SFX}"
    create_workflow(api, bash_workflow(name, "true"))
    hook = api.post(f"/workflows/{name}/triggers", json={"type": "webhook"})
    assert hook.status_code == 201, hook.text
    trigger_id, secret = hook.json()["id"], hook.json()["secret"]
    ctx.sensitive.append(secret)
    body = b'{"n": 1}'
    headers = signatures.sign(secret, body, f"d-{uuid.uuid4()}")
    url = f"{stack.api_url}/hooks/{trigger_id}"
    first = httpx.post(url, content=body, headers=headers, timeout=180)  # no key: signed
    assert first.status_code == 202, first.text
    run_id = first.json()["run_id"] or wait_for(
        lambda: httpx.post(url, content=body, headers=headers, timeout=180).json()["run_id"],
        60, "the queued delivery's run")
    actor = f"trigger:{trigger_id}"
    request = wait_rows(api, actor=actor, action="receive")[-1]  # the first delivery's
    assert (request["namespace"], request["outcome"], request["actor_name"]) == (NS, 202, None)
    # the run when it started while the sender waited, else the trigger
    expected = f"run:{run_id}" if first.json()["run_id"] else f"trigger:{trigger_id}"
    assert request["target"] == expected and request["request_id"], request
    (start,) = wait_rows(api, actor=actor, action="run.start.webhook")
    assert (start["target"], start["namespace"], start["outcome"]) == (f"run:{run_id}", NS, 201)
    # The same delivery again answers the same run: another request row, no second start
    seen = len(audit(api, actor=actor, action="receive"))
    again = httpx.post(url, content=body, headers=headers, timeout=180)
    assert again.status_code == 202 and again.json()["run_id"] == run_id
    wait_for(lambda: len(audit(api, actor=actor, action="receive")) == seen + 1, 30,
             "the replay's row")
    assert len(audit(api, actor=actor, action="run.start.webhook")) == 1
    assert wait_run(api, run_id)["state"] == "COMPLETED"


def test_schedule_started_runs_are_rows_once_due_and_only_then(
        api: httpx.Client, stack: Stack, ctx: Ctx) -> None:
    """Runs made as Prefect's scheduler makes them (the schedule's own parameters): one due
    now; one due in 20 s and cancelled before it starts (it never has a start time); one due
    in an hour, as the scheduler makes them ahead, which no schedule has fired yet (a row
    for it would stay even if the schedule were disabled and Prefect deleted the run)."""
    name = f"aud-sched-{SFX}"
    create_workflow(api, bash_workflow(name, "true", triggers=[
        {"type": "schedule", "cron": "0 4 * * *", "name": "nightly"}]))
    (trigger,) = api.get(f"/workflows/{name}/triggers").json()

    def at(seconds: float) -> Any:
        return Scheduled(scheduled_time=datetime.now(UTC) + timedelta(seconds=seconds))

    with SyncPrefectClient(stack.prefect_url, auth_string=stack.prefect_auth) as client:
        deployment = client.read_deployment_by_name(f"{name}/{name}")
        (schedule,) = client.read_deployment_schedules(deployment.id)
        parameters = dict(schedule.parameters)
        assert parameters["flowforge_trigger"]["id"] == trigger["id"]
        future, later, now = (client.create_flow_run_from_deployment(
            deployment.id, parameters=parameters, tags=["auto-scheduled"], state=at(seconds))
            for seconds in (3600, 20, 0))
        with stack.client(ctx.runner_key) as runner:
            assert runner.post(f"/runs/{later.id}/cancel").status_code == 202
        assert state_of(api, str(later.id)) == "CANCELLED"
        for run in (now, later):
            (row,) = wait_rows(api, timeout=60, target=f"run:{run.id}",
                               action="run.start.schedule")
            assert (row["actor"], row["actor_name"], row["namespace"], row["outcome"]) == (
                f"trigger:{trigger['id']}", "nightly", NS, 201), row
        # The passes that saw the other two ran after the future run was made
        assert audit(api, target=f"run:{future.id}") == []
        client.delete_flow_run(future.id)
    assert wait_run(api, str(now.id))["state"] == "COMPLETED"
    assert audit(api, target=f"run:{later.id}", action="cancel_run")[0]["outcome"] == 202


def test_a_dependency_started_run_is_a_row_of_its_trigger(api: httpx.Client, stack: Stack,
                                                         ctx: Ctx) -> None:
    up, down = f"aud-up-{SFX}", f"aud-down-{SFX}"
    create_workflow(api, bash_workflow(up, "true"))
    create_workflow(api, bash_workflow(down, "true", triggers=[
        {"type": "dependency", "upstream": [up], "on": "success"}]))
    (trigger,) = api.get(f"/workflows/{down}/triggers").json()
    with stack.client(ctx.runner_key) as runner:
        made = runner.post(f"/workflows/{up}/runs", json={"inputs": {}})
        assert made.status_code == 201, made.text
    assert wait_run(api, made.json()["run_id"])["state"] == "COMPLETED"
    (run,) = wait_for(lambda: api.get(f"/workflows/{down}/runs").json(), 90, "the downstream run")
    (row,) = wait_rows(api, timeout=60, target=f"run:{run['id']}")
    assert (row["actor"], row["action"], row["namespace"], row["outcome"]) == (
        f"trigger:{trigger['id']}", "run.start.dependency", NS, 201), row
    assert wait_run(api, run["id"])["state"] == "COMPLETED"


def test_ssh_servers_stay_in_their_namespace(api: httpx.Client, stack: Stack,
                                            ctx: Ctx) -> None:
    team_a, team_b = f"team-a-{SFX}", f"team-b-{SFX}"
    password = f"pw-{uuid.uuid4().hex}"
    ctx.sensitive.append(password)
    servers = {}
    for team in (team_a, team_b):
        servers[team] = f"aud-box-{team}"
        made = api.post("/servers", json={"name": servers[team], "namespace": team,
                                          "host": "127.0.0.1", "port": free_port(),
                                          "username": "ff", "password": password})
        assert made.status_code == 201, made.text
    admin_a, editor_a = new_key(api, "admin", [team_a]), new_key(api, "editor", [team_a])
    ctx.sensitive += [admin_a["key"], editor_a["key"]]
    other = servers[team_b]
    with stack.client(admin_a["key"]) as a:
        assert a.get(f"/servers/{servers[team_a]}").status_code == 200
        for method, path in (("GET", f"/servers/{other}"), ("DELETE", f"/servers/{other}"),
                             ("POST", f"/servers/{other}/test")):
            assert a.request(method, path).status_code == 404, (method, path)
        replaced = a.put(f"/servers/{other}", json={"host": "127.0.0.1", "port": 22,
                                                     "username": "x", "password": "y"})
        assert replaced.status_code == 404, replaced.text
        assert {s["name"] for s in a.get("/servers").json()} == {servers[team_a]}
    assert api.get(f"/servers/{other}").json()["username"] == "ff"  # untouched

    def doc(server: str) -> dict[str, Any]:
        return {"name": f"aud-ssh-{SFX}", "namespace": team_a, "jobs": [
            {"name": "remote-job", "runtime": "bash", "script": "true",
             "target": {"ssh": {"servers": [server]}}}]}

    with stack.client(editor_a["key"]) as e:
        refused = e.post("/workflows", json=doc(other))
        assert refused.status_code == 422, refused.text
        (problem,) = refused.json()["error"]["details"]
        assert problem["job"] == "remote-job" and other in problem["message"], problem
        assert e.post("/workflows", json=doc(servers[team_a])).status_code == 201
        assert e.delete(f"/workflows/aud-ssh-{SFX}").status_code in (202, 204)
    (row,) = wait_rows(api, action="create_server", target=f"server:{servers[team_b]}")
    assert row["namespace"] == team_b and row["outcome"] == 201, row


def test_no_row_holds_a_secret_a_key_or_a_webhook_secret(api: httpx.Client,
                                                         ctx: Ctx) -> None:
    rows: list[dict[str, Any]] = []
    while page := audit(api, offset=len(rows)):
        rows += page
    assert any(r["action"] == "put_secret" and r["namespace"] == NS for r in rows)
    assert any(r["action"] == "create_key" for r in rows)
    dumped = json.dumps(rows)
    for value in ctx.sensitive:
        assert value not in dumped, value[:8]
