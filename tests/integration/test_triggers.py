"""Triggers against the real stack: Prefect schedules, automations and the worker run for real.

Order matters and is deliberate: the every-minute schedule is created first and checked last,
so the up-to-a-minute wait for its run overlaps the other tests instead of adding to them.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.exceptions import PrefectHTTPStatusError

from api.services import signatures
from tests.conftest import BIN, Stack, _child_env, create_workflow, wait_run

pytestmark = pytest.mark.integration

UP_SCRIPT = """
import sys
import flowforge_helpers as ff
if ff.input()["inputs"]["fail"]:
    sys.exit(3)
ff.output({"rows": 42})
"""
SHOW_TRIGGER = """
import flowforge_helpers as ff
ff.output({"trigger": ff.input()["trigger"]})
"""


def show_trigger(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "jobs": [{"name": "show", "runtime": "python",
                                    "script": SHOW_TRIGGER}], **extra}


def upstream(name: str) -> dict[str, Any]:
    return {"name": name, "inputs": {"fail": {"type": "boolean", "default": False}},
            "jobs": [{"name": "make", "runtime": "python", "script": UP_SCRIPT}],
            "outputs": {"rows": "{{ jobs.make.output.rows }}"}}


def runs_of(api: httpx.Client, name: str) -> list[dict[str, Any]]:
    response = api.get(f"/workflows/{name}/runs")
    assert response.status_code == 200, response.text
    runs: list[dict[str, Any]] = response.json()
    return runs


def upstreams(api: httpx.Client, name: str) -> set[tuple[str, ...]]:
    """The upstream run ids each run of `name` was triggered by."""
    return {tuple(sorted(wait_run(api, r["id"])["trigger"]["upstream_run_ids"]))
            for r in runs_of(api, name)}


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.5)
    raise TimeoutError(f"{what} not seen after {timeout}s")


def wait_runs(api: httpx.Client, name: str, count: int, timeout: float = 60) -> list[dict[str, Any]]:
    return list(wait_for(lambda: (r := runs_of(api, name)) and len(r) >= count and r,
                         timeout, f"{count} run(s) of {name}"))


def drop(api: httpx.Client, *names: str) -> list[int]:
    """Delete workflows; their status codes (202: Prefect was too slow to answer, the sync
    loop finishes removing the deployment and automations)."""
    codes = []
    for name in names:  # downstream first: an upstream with dependants cannot be deleted
        response = api.delete(f"/workflows/{name}")
        assert response.status_code in (202, 204, 404), response.text
        codes.append(response.status_code)
    return codes


def sign(secret: str, body: bytes, delivery: str | None = None) -> dict[str, str]:
    """FlowForge's signature headers of a delivery (a new delivery id unless given)."""
    return signatures.sign(secret, body, delivery or f"d-{uuid.uuid4()}")


def prefect(stack: Stack) -> SyncPrefectClient:
    return SyncPrefectClient(stack.prefect_url, auth_string=stack.prefect_auth)


def automations_of(stack: Stack, workflow: str) -> list[Any]:
    found, offset = [], 0
    with prefect(stack) as client:  # paged: one read answers at most 200
        while page := client.read_automations(offset=offset):
            found += [a for a in page if a.name.startswith(f"flowforge:{workflow}:")]
            offset += len(page)
    return found


def drop_and_see_automations_go(api: httpx.Client, stack: Stack, workflow: str) -> None:
    """Gotcha 11: no orphan keeps firing; at once after a 204, or once the sync loop (2 s
    here) has retried a removal an overloaded Prefect did not answer in time (202)."""
    (code,) = drop(api, workflow)
    deadline = time.monotonic() + (180 if code == 202 else 0)
    while automations_of(stack, workflow):
        assert time.monotonic() < deadline, automations_of(stack, workflow)
        time.sleep(1)


def test_schedule_trigger_is_created_first(api: httpx.Client, stack: Stack) -> None:
    """Every-minute schedule + a second one; changing the second touches only its schedule."""
    create_workflow(api, show_trigger("tr-sched"))
    every = api.post("/workflows/tr-sched/triggers",
                     json={"type": "schedule", "cron": "* * * * *", "name": "every-minute"})
    assert every.status_code == 201, every.text
    assert len(every.json()["next_runs"]) == 5
    other = api.post("/workflows/tr-sched/triggers",
                     json={"type": "schedule", "cron": "0 2 * * *", "timezone": "Europe/Paris",
                           "enabled": False})
    assert other.status_code == 201, other.text
    bad = api.post("/workflows/tr-sched/triggers", json={"type": "schedule", "cron": "99 * * * *"})
    assert bad.status_code == 422 and "cron" in bad.json()["error"]["message"]
    bad_tz = api.post("/workflows/tr-sched/triggers",
                      json={"type": "schedule", "cron": "* * * * *", "timezone": "Nowhere/X"})
    assert bad_tz.status_code == 422 and "IANA" in bad_tz.json()["error"]["message"]
    with prefect(stack) as client:
        dep = client.read_deployment_by_name("tr-sched/tr-sched")
        before = {s.slug: s for s in client.read_deployment_schedules(dep.id)}
        assert before[every.json()["id"]].active is True
        assert before[other.json()["id"]].active is False
        patched = api.patch(f"/workflows/tr-sched/triggers/{other.json()['id']}",
                            json={"cron": "30 3 * * *"})
        assert patched.status_code == 200, patched.text
        after = {s.slug: s for s in client.read_deployment_schedules(dep.id)}
    assert after[other.json()["id"]].schedule.cron == "30 3 * * *"  # type: ignore[union-attr]
    untouched, was = after[every.json()["id"]], before[every.json()["id"]]
    assert (untouched.id, untouched.updated) == (was.id, was.updated)
    got = api.get(f"/workflows/tr-sched/triggers/{every.json()['id']}").json()
    assert got["type"] == "schedule" and got["enabled"] and len(got["next_runs"]) == 5


def test_dependency_triggers_success_failure_all_any(api: httpx.Client, stack: Stack) -> None:
    drop(api, "tr-on-success", "tr-on-failure", "tr-all", "tr-any", "tr-up1", "tr-up2")
    create_workflow(api, upstream("tr-up1"))
    create_workflow(api, upstream("tr-up2"))
    create_workflow(api, {
        "name": "tr-on-success", "jobs": [{
            "name": "use", "runtime": "python",
            "env": {"ROWS": "{{ trigger.upstream['tr-up1'].outputs.rows }}"},
            "script": "import os, flowforge_helpers as ff\nff.output({'rows': int(os.environ['ROWS'])})"}],
        "triggers": [{"type": "dependency", "upstream": ["tr-up1"], "on": "success"}]})
    create_workflow(api, show_trigger("tr-on-failure", triggers=[
        {"type": "dependency", "upstream": ["tr-up1"], "on": "failure"}]))
    create_workflow(api, show_trigger("tr-all", triggers=[
        {"type": "dependency", "upstream": ["tr-up1", "tr-up2"], "logic": "all",
         "within": 3600}]))
    create_workflow(api, show_trigger("tr-any", triggers=[
        {"type": "dependency", "upstream": ["tr-up1", "tr-up2"], "logic": "any"}]))

    ok = api.post("/workflows/tr-up1/runs", json={"inputs": {"fail": False}}).json()["run_id"]
    assert wait_run(api, ok)["state"] == "COMPLETED"
    down = wait_runs(api, "tr-on-success", 1)[0]
    down_run = wait_run(api, down["id"])
    assert down_run["state"] == "COMPLETED", down_run
    assert down_run["trigger"]["type"] == "dependency"
    assert down_run["trigger"]["upstream_run_ids"] == [ok]
    assert down_run["trigger"]["upstream"]["tr-up1"]["outputs"] == {"rows": 42}
    assert down_run["jobs"][0]["output"] == {"rows": 42}  # read through a template
    wait_runs(api, "tr-any", 1)

    failed = api.post("/workflows/tr-up1/runs", json={"inputs": {"fail": True}}).json()["run_id"]
    assert wait_run(api, failed)["state"] == "FAILED"
    on_failure = wait_runs(api, "tr-on-failure", 1)[0]
    assert wait_run(api, on_failure["id"])["trigger"]["upstream_run_ids"] == [failed]
    time.sleep(3)  # an on-success trigger must not have fired on the failure
    # Which upstream runs started each downstream run, not how many runs there are: Prefect's
    # automations fire at least once, and its SQLite server under a full suite's load fails
    # a trigger evaluation on "database is locked" after acting, then evaluates the event
    # again (seen in CI: one Completed event, two invocations 250 ms apart). A known issue,
    # not deduplicated by FlowForge yet (docs/architecture.md, Triggers).
    assert upstreams(api, "tr-on-success") == {(ok,)}
    assert runs_of(api, "tr-all") == []  # only one of the two upstreams has succeeded
    assert upstreams(api, "tr-any") == {(ok,)}

    second = api.post("/workflows/tr-up2/runs", json={"inputs": {}}).json()["run_id"]
    assert wait_run(api, second)["state"] == "COMPLETED"
    all_run = wait_runs(api, "tr-all", 1)[0]
    body = wait_run(api, all_run["id"])
    assert sorted(body["trigger"]["upstream_run_ids"]) == sorted([ok, second])
    assert set(body["trigger"]["upstream"]) == {"tr-up1", "tr-up2"}
    wait_for(lambda: upstreams(api, "tr-any") == {(ok,), (second,)}, 60, "tr-any on both")
    time.sleep(3)
    assert upstreams(api, "tr-all") == {tuple(sorted([ok, second]))}
    assert upstreams(api, "tr-any") == {(ok,), (second,)}
    assert upstreams(api, "tr-on-failure") == {(failed,)}


def test_cross_workflow_rules(api: httpx.Client) -> None:
    drop(api, "tr-cyc-b", "tr-cyc-a")
    unknown = api.post("/workflows", json=show_trigger("tr-cyc-a", triggers=[
        {"type": "dependency", "upstream": ["no-such-workflow"]}]))
    assert unknown.status_code == 422
    assert "no-such-workflow" in unknown.json()["error"]["message"]
    create_workflow(api, show_trigger("tr-cyc-a"))
    create_workflow(api, show_trigger("tr-cyc-b", triggers=[
        {"type": "dependency", "upstream": ["tr-cyc-a"]}]))
    loop = api.post("/workflows/tr-cyc-a/triggers",
                    json={"type": "dependency", "upstream": ["tr-cyc-b"]})
    assert loop.status_code == 422, loop.text
    assert "tr-cyc-a -> tr-cyc-b -> tr-cyc-a" in loop.json()["error"]["message"]
    refused = api.delete("/workflows/tr-cyc-a")
    assert refused.status_code == 409 and refused.json()["error"]["details"]["dependants"] == ["tr-cyc-b"]
    (listed,) = api.get("/workflows/tr-cyc-b/triggers").json()
    assert listed["type"] == "dependency" and listed["config"]["upstream"] == ["tr-cyc-a"]
    drop(api, "tr-cyc-b", "tr-cyc-a")


def test_webhook_signature_replay_size_and_disable(api: httpx.Client, stack: Stack) -> None:
    create_workflow(api, show_trigger("tr-hook", inputs={"who": {"type": "string",
                                                                 "default": "nobody"}}))
    created = api.post("/workflows/tr-hook/triggers",
                       json={"type": "webhook", "inputs": {"who": "{{ body.user.name }}"}})
    assert created.status_code == 201, created.text
    hook = created.json()
    assert hook["url"] == f"/hooks/{hook['id']}" and hook["secret"]
    assert api.get(f"/workflows/tr-hook/triggers/{hook['id']}").json()["secret"] is None
    body = json.dumps({"user": {"name": "ada"}}).encode()

    bad = api.post(hook["url"], content=body, headers={"X-FlowForge-Signature": "sha256=00"})
    assert bad.status_code == 401
    unsigned = api.post(hook["url"], content=body)
    assert unsigned.status_code == 401
    assert runs_of(api, "tr-hook") == []  # nothing started

    headers = {**sign(hook["secret"], body), "Content-Type": "application/json"}
    first = api.post(hook["url"], content=body, headers=headers)
    assert first.status_code == 202, first.text
    assert first.json()["status"] == "started"
    again = api.post(hook["url"], content=body, headers=headers)
    assert again.status_code == 202 and again.json()["run_id"] == first.json()["run_id"]

    big = b"x" * (1024 * 1024 + 1)
    too_big = api.post(hook["url"], content=big, headers=sign(hook["secret"], big))
    assert too_big.status_code == 413

    run = wait_run(api, first.json()["run_id"])
    assert run["state"] == "COMPLETED" and run["inputs"]["who"] == "ada"
    assert run["trigger"]["type"] == "webhook" and run["trigger"]["id"] == hook["id"]
    assert len(runs_of(api, "tr-hook")) == 1

    off = api.patch(f"/workflows/tr-hook/triggers/{hook['id']}", json={"enabled": False})
    assert off.status_code == 200 and off.json()["enabled"] is False
    headers = sign(hook["secret"], body, "d-after-disable")
    assert api.post(hook["url"], content=body, headers=headers).status_code == 404


def test_event_trigger_fires_on_post_events(api: httpx.Client, stack: Stack) -> None:
    create_workflow(api, show_trigger("tr-event", triggers=[
        {"type": "event", "event": "flowforge.test.ping",
         "match": {"prefect.resource.id": "flowforge.test.thing"}}]))
    other = api.post("/events", json={"event": "flowforge.test.ping",
                                      "resource": {"prefect.resource.id": "something.else"}})
    assert other.status_code == 202
    sent = api.post("/events", json={"event": "flowforge.test.ping", "payload": {"n": 1},
                                     "resource": {"prefect.resource.id": "flowforge.test.thing"}})
    assert sent.status_code == 202, sent.text
    (run,) = wait_runs(api, "tr-event", 1)
    body = wait_run(api, run["id"])
    assert body["trigger"]["type"] == "event" and body["trigger"]["event_id"] == sent.json()["id"]
    time.sleep(2)
    assert len(runs_of(api, "tr-event")) == 1  # the other resource did not match


def flowforge_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    # A sanity bound, not a speed check: the SQLite Prefect server of a loaded CI run has
    # stalled 60 s at a time on "database is locked", and a full sync makes many calls.
    return subprocess.run([str(BIN / "flowforge"), *args, "--api-url", stack.api_url],
                          capture_output=True, text=True, timeout=400,
                          env=_child_env(FLOWFORGE_API_KEY=stack.admin_key))


def sync_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    """`flowforge sync [args]`, again while Prefect did not answer in time.

    The command covers every workflow of the shared stack, and the SQLite Prefect server of a
    loaded CI run has stalled a minute at a time: one other workflow then stays `pending`
    (exit 1; seen in CI) or the check gets a 503 (exit 2). Syncing again is what the user, and
    the API's own sync loop, do about that; a refusal (`error`) or drift is returned at once.
    """
    for _ in range(3):
        result = flowforge_cli(stack, "sync", *args)
        rows = [line for line in result.stdout.splitlines() if not line.startswith(" ")]
        stalled = (result.returncode == 2 and "HTTP 503" in result.stderr) or (
            result.returncode == 1 and not args
            and all(line.endswith(": synced") or ": pending" in line for line in rows))
        if not stalled:
            return result
    return result


def test_sync_check_reports_drift_and_sync_repairs_it(api: httpx.Client, stack: Stack) -> None:
    create_workflow(api, show_trigger("tr-drift", triggers=[
        {"type": "schedule", "cron": "0 4 * * *", "name": "nightly"},
        {"type": "event", "event": "flowforge.test.drift", "name": "on-drift"}]))
    with prefect(stack) as client:
        dep = client.read_deployment_by_name("tr-drift/tr-drift")
        (schedule,) = client.read_deployment_schedules(dep.id)
        client.delete_deployment_schedule(dep.id, schedule.id)
        (auto,) = automations_of(stack, "tr-drift")
        client.pause_automation(auto.id)
    check = sync_cli(stack, "--check")
    assert check.returncode == 1, check.stdout + check.stderr
    assert "tr-drift: DRIFT" in check.stdout and "schedule" in check.stdout
    assert f"automation flowforge:tr-drift:{auto.name.rsplit(':', 1)[1]} differs" in check.stdout
    repair = sync_cli(stack)
    assert repair.returncode == 0, repair.stdout + repair.stderr
    clean = sync_cli(stack, "--check")
    assert clean.returncode == 0, clean.stdout
    with prefect(stack) as client:
        (schedule,) = client.read_deployment_schedules(dep.id)
        assert schedule.schedule.cron == "0 4 * * *"  # type: ignore[union-attr]
    (auto,) = automations_of(stack, "tr-drift")
    assert auto.enabled

    # Deleting a trigger deletes its automation; deleting the workflow deletes the rest.
    trigger_id = auto.name.rsplit(":", 1)[1]
    assert api.delete(f"/workflows/tr-drift/triggers/{trigger_id}").status_code == 204
    assert automations_of(stack, "tr-drift") == []
    create_workflow(api, show_trigger("tr-drift", triggers=[
        {"type": "event", "event": "flowforge.test.drift"}]))
    assert len(automations_of(stack, "tr-drift")) == 1
    drop_and_see_automations_go(api, stack, "tr-drift")


def test_automations_past_the_servers_page_limit_are_seen_and_deleted(
        api: httpx.Client, stack: Stack) -> None:
    """Prefect answers at most 200 automations per read, sorted by name: with 201 others
    sorting first, FlowForge's own were on no page it read, so deleting the workflow left
    its automation firing and a re-sync created a second one."""
    from prefect.events.actions import DoNothing
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    with prefect(stack) as client:
        fillers = [client.create_automation(AutomationCore(
            name=f"aaa-filler-{i:03}", enabled=False, actions=[DoNothing()],
            trigger=EventTrigger(expect={"flowforge.test.never"}, posture=Posture.Reactive,
                                 threshold=1))) for i in range(201)]
    try:
        create_workflow(api, show_trigger("tr-many", triggers=[
            {"type": "event", "event": "flowforge.test.many"}]))
        (auto,) = automations_of(stack, "tr-many")
        replaced = api.put("/workflows/tr-many", json=show_trigger("tr-many", description="again",
                           triggers=[{"type": "event", "event": "flowforge.test.many"}]))
        assert replaced.status_code == 200, replaced.text
        assert [a.id for a in automations_of(stack, "tr-many")] == [auto.id]  # kept, not doubled
        drop_and_see_automations_go(api, stack, "tr-many")
    finally:
        with prefect(stack) as client:
            for automation_id in fillers:
                try:
                    client.delete_automation(automation_id)
                except PrefectHTTPStatusError as exc:  # gone: a retried delete that had worked
                    if exc.response.status_code != 404:
                        raise


def test_schedule_produced_a_run_and_disabling_stops_it(api: httpx.Client, stack: Stack) -> None:
    (trigger,) = [t for t in api.get("/workflows/tr-sched/triggers").json()
                  if t["name"] == "every-minute"]
    # Prefect's scheduler has also queued future runs: wait for one that left `Scheduled`.
    run = wait_for(lambda: next((r for r in api.get("/workflows/tr-sched/runs?limit=200").json()
                                 if r["prefect_state"] != "Scheduled"), None),
                   130, "a run of the every-minute schedule")
    body = wait_run(api, run["id"])
    assert body["trigger"]["type"] == "schedule" and body["trigger"]["id"] == trigger["id"]
    # Deactivating makes Prefect delete the schedule's queued future runs (up to 100 for an
    # every-minute cron); on SQLite under CI load that took over a minute once.
    off = api.patch(f"/workflows/tr-sched/triggers/{trigger['id']}", json={"enabled": False},
                    timeout=300)
    assert off.status_code == 200 and off.json()["enabled"] is False
    with prefect(stack) as client:
        dep = client.read_deployment_by_name("tr-sched/tr-sched")
        assert not any(s.active for s in client.read_deployment_schedules(dep.id))
        from prefect.client.schemas.filters import (
            DeploymentFilter,
            DeploymentFilterId,
            FlowRunFilter,
            FlowRunFilterState,
            FlowRunFilterStateType,
        )
        from prefect.client.schemas.objects import StateType

        pending = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[dep.id])),
            flow_run_filter=FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(
                any_=[StateType.SCHEDULED]))))
    # Prefect drops the future runs of a schedule that changes; nothing is left to fire
    # (a run already due this very second may still be handed to the worker).
    soon = time.time() + 5
    assert [r for r in pending if r.expected_start_time
            and r.expected_start_time.timestamp() > soon] == []
    assert api.delete(f"/workflows/tr-sched/triggers/{trigger['id']}").status_code == 204
    drop(api, "tr-sched")


def test_a_webhook_delivery_prefect_cannot_take_is_queued_then_started(
        api: httpx.Client, stack: Stack) -> None:
    """The deployment was deleted in Prefect by hand: the delivery is kept, not refused, and
    its run starts once `flowforge sync` has put the deployment back."""
    create_workflow(api, show_trigger("tr-inbox"))
    hook = api.post("/workflows/tr-inbox/triggers", json={"type": "webhook"}).json()
    with prefect(stack) as client:
        client.delete_deployment(client.read_deployment_by_name("tr-inbox/tr-inbox").id)
    body = b"{}"
    headers = sign(hook["secret"], body, "inbox-1")
    queued = api.post(hook["url"], content=body, headers=headers)
    assert queued.status_code == 202, queued.text
    assert queued.json()["status"] == "queued" and queued.json()["run_id"] is None
    assert sync_cli(stack).returncode == 0
    started = wait_for(lambda: (r := api.post(hook["url"], content=body, headers=headers).json())
                       ["run_id"] and r, 60, "the queued delivery's run")
    assert started["status"] == "started"
    run = wait_run(api, started["run_id"])
    assert run["state"] == "COMPLETED" and run["trigger"]["delivery_id"] == "inbox-1"
    assert len(runs_of(api, "tr-inbox")) == 1
    drop(api, "tr-inbox")
