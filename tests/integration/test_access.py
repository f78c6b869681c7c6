"""Access on the real stack: a closed Prefect, keys across API processes, namespaces across
every resource, what a job can reach, and audit rows of runs a trigger started.

Each test makes its own keys with the stack's admin key, as a team's admin would.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import SyncPrefectClient

from api.services import signatures
from tests.conftest import (
    Stack,
    _child_env,
    create_workflow,
    free_port,
    jobs_by_name,
    run_workflow,
    stop_process,
    wait_http,
    wait_run,
)
from tests.receivers import HttpTarget

pytestmark = pytest.mark.integration


def new_key(api: httpx.Client, role: str, namespaces: list[str]) -> str:
    made = api.post("/api-keys", json={"name": f"{role}-{uuid.uuid4().hex[:6]}", "role": role,
                                       "namespaces": namespaces})
    assert made.status_code == 201, made.text
    key: str = made.json()["key"]
    return key


@pytest.fixture(scope="module")
def receiver() -> Iterator[HttpTarget]:
    server = HttpTarget()
    yield server
    server.close()


def test_prefect_is_closed_and_the_worker_and_runs_still_work(api: httpx.Client,
                                                              stack: Stack) -> None:
    for method, path in (("POST", "/flow_runs/filter"), ("POST", "/block_documents/filter"),
                         ("GET", "/variables/name/x")):
        open_ = httpx.request(method, f"{stack.prefect_url}{path}", json={}, timeout=30)
        assert open_.status_code == 401, (path, open_.text)
    assert httpx.get(f"{stack.prefect_url}/health", timeout=30).status_code == 200  # probes
    with stack.prefect_http() as prefect:
        assert prefect.post("/flow_runs/filter", json={"limit": 1}).status_code == 200
    mode = (stack.home / "prefect-auth").stat().st_mode & 0o777
    assert mode == 0o600
    create_workflow(api, {"name": "closed-prefect", "jobs": [
        {"name": "a", "runtime": "bash", "script": "echo ran"}]})
    assert run_workflow(api, "closed-prefect")["state"] == "COMPLETED"


def test_a_key_revoked_in_one_api_process_is_refused_by_another(api: httpx.Client,
                                                                stack: Stack) -> None:
    port = free_port()
    log = stack.home / "logs" / f"api-{port}.log"
    env = _child_env(FLOWFORGE_HOME=str(stack.home), PREFECT_API_URL=stack.prefect_url,
                     PREFECT_API_AUTH_STRING=stack.prefect_auth, FLOWFORGE_SYNC_INTERVAL="3600")
    with log.open("wb") as out:
        second = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "api.main:app", "--host", "127.0.0.1",
             "--port", str(port)], env=env, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 90, second, log)
        made = api.post("/api-keys", json={"name": "two-processes", "role": "viewer"}).json()
        other = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60,
                             headers={"Authorization": f"Bearer {made['key']}"})
        with other:
            assert other.get("/workflows").status_code == 200
            assert api.delete(f"/api-keys/{made['id']}").status_code == 204
            refused = other.get("/workflows")
            assert refused.status_code == 401 and "revoked" in refused.text
    finally:
        stop_process(second)


def test_namespaces_isolate_every_resource(api: httpx.Client, stack: Stack) -> None:
    suffix = uuid.uuid4().hex[:6]
    ns_a, ns_b = f"iso-a-{suffix}", f"iso-b-{suffix}"
    for ns, value in ((ns_a, "value-of-a"), (ns_b, "value-of-b")):
        assert api.put("/secrets/tok", params={"namespace": ns},
                       json={"value": f"secret-{value}"}).status_code == 200
        assert api.put("/variables/shared", params={"namespace": ns},
                       json={"value": value}).status_code == 200
    a = stack.client(new_key(api, "editor", [ns_a]))
    b = stack.client(new_key(api, "editor", [ns_b]))
    name = f"iso-wf-{suffix}"
    script = ("import hashlib, os, flowforge_helpers as ff\n"
              "ff.output({'var': ff.get_variable('shared'),"
              " 'tok': hashlib.sha256(os.environ['TOK'].encode()).hexdigest()})")
    doc = {"name": name, "namespace": ns_a, "jobs": [
        {"name": "read", "runtime": "python", "script": script,
         "env": {"TOK": "{{ secrets.tok }}"}}],
        "triggers": [{"type": "event", "event": f"iso.{suffix}.go"}]}
    with a, b:
        create_workflow(a, doc)
        run = run_workflow(a, name)
        out = jobs_by_name(run)["read"]["output"]
        assert out == {"var": "value-of-a",
                       "tok": hashlib.sha256(b"secret-value-of-a").hexdigest()}, run
        # Everything of namespace A is "not found" to B, and left out of its lists
        for path in (f"/workflows/{name}", f"/workflows/{name}/runs", f"/runs/{run['id']}",
                     f"/runs/{run['id']}/logs", f"/workflows/{name}/triggers",
                     f"/workflows/{name}/flow"):
            assert b.get(path).status_code == 404, path
        for method, path in (("POST", f"/runs/{run['id']}/cancel"),
                             ("POST", f"/runs/{run['id']}/rerun"),
                             ("POST", f"/workflows/{name}/runs"),
                             ("DELETE", f"/workflows/{name}")):
            assert b.request(method, path, json={}).status_code == 404, path
        assert name not in {w["name"] for w in b.get("/workflows").json()}
        assert b.get("/variables", params={"namespace": ns_a}).status_code == 404
        assert b.get("/variables/shared", params={"namespace": ns_a}).status_code == 404
        assert b.get("/variables/shared", params={"namespace": ns_b}).json()["value"] == \
            "value-of-b"
        assert {v["key"] for v in b.get("/variables", params={"namespace": ns_b}).json()} == \
            {"shared"}
        assert b.put("/variables/shared", params={"namespace": ns_a},
                     json={"value": "overwritten"}).status_code == 404
        assert a.get("/variables/shared", params={"namespace": ns_a}).json()["value"] == \
            "value-of-a"
        # A sub-workflow job calling A's workflow is a 422 for B, naming the job
        caller = b.post("/workflows", json={"name": f"iso-caller-{suffix}", "namespace": ns_b,
                                            "jobs": [{"name": "call", "type": "workflow",
                                                      "workflow": name}]})
        assert caller.status_code == 422 and "call" in caller.text, caller.text
        # Events emitted in B do not fire A's event trigger; A's own do
        assert b.post("/events", json={"event": f"iso.{suffix}.go",
                                       "namespace": ns_b}).status_code == 202
        time.sleep(8)
        assert len(a.get(f"/workflows/{name}/runs").json()) == 1
        assert a.post("/events", json={"event": f"iso.{suffix}.go",
                                       "namespace": ns_a}).status_code == 202
        deadline = time.monotonic() + 90
        while len(runs := a.get(f"/workflows/{name}/runs").json()) < 2:
            assert time.monotonic() < deadline, "the event of namespace A started nothing"
            time.sleep(1)
        fired = next(r for r in runs if r["id"] != run["id"])
        # ... and that run, which no key started, is in the audit log with its trigger
        deadline = time.monotonic() + 60
        while True:
            rows = api.get("/audit", params={"target": f"run:{fired['id']}"}).json()
            if rows or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert rows and rows[0]["action"] == "run.start.event", rows
        assert rows[0]["actor"].startswith("trigger:") and rows[0]["namespace"] == ns_a
        wait_run(a, fired["id"])


def test_a_script_job_can_reach_no_credential(api: httpx.Client, stack: Stack) -> None:
    script = """
import json, os, flowforge_helpers as ff
def attempt(path):
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError as exc:
        return f"refused: {type(exc).__name__}"
ff.output({"uid": os.getuid(), "env": dict(os.environ),
           "launcher_env": attempt(f"/proc/{os.getppid()}/environ"),
           "admin_key": attempt(os.environ["HOME_OF_FLOWFORGE"] + "/admin.key"),
           "prefect_auth": attempt(os.environ["HOME_OF_FLOWFORGE"] + "/prefect-auth")})
"""
    create_workflow(api, {"name": "env-dump", "jobs": [
        {"name": "dump", "runtime": "python", "script": script,
         "env": {"HOME_OF_FLOWFORGE": str(stack.home)}}]})
    run = run_workflow(api, "env-dump")
    out: dict[str, Any] = jobs_by_name(run)["dump"]["output"]
    assert out["uid"] == 65534  # nobody: the worker runs as root
    text = str(out)
    for secret in (stack.admin_key, stack.prefect_auth, stack.prefect_auth.split(":")[1],
                   stack.prefect_url):
        assert secret not in text
    for name in out["env"]:
        assert not name.startswith("PREFECT_"), name
        assert not name.startswith("FLOWFORGE_") or name.startswith("FLOWFORGE_JOB_") \
            or name == "FLOWFORGE_HELPERS", name
    for attempt in ("launcher_env", "admin_key", "prefect_auth"):
        assert out[attempt].startswith("refused: PermissionError"), (attempt, out[attempt][:80])


def test_http_and_message_jobs_refuse_private_addresses(api: httpx.Client,
                                                        receiver: HttpTarget) -> None:
    """The stack allows 127.0.0.1 (FLOWFORGE_EGRESS_ALLOW, as for the test receivers); other
    loopback addresses, metadata and redirects there are refused with the address named."""
    port = receiver.port
    before = len(receiver.requests)
    jobs = [
        {"name": "loopback", "type": "http", "url": f"http://127.0.0.2:{port}/echo"},
        {"name": "metadata", "type": "http", "url": "http://169.254.169.254/latest/meta-data/",
         "timeout": 5},
        {"name": "redirect", "type": "http", "follow_redirects": True,
         "url": f"http://127.0.0.1:{port}/redirect?to=http://127.0.0.2:{port}/echo"},
        {"name": "allowed", "type": "http", "url": f"http://127.0.0.1:{port}/echo"},
        {"name": "notify", "type": "message", "to": [f"json://127.0.0.2:{port}/x"],
         "body": "hello"},
    ]
    create_workflow(api, {"name": "egress", "settings": {"execution": "dag", "max_parallel_jobs": 5},
                          "jobs": [{**j, "continue_on_error": True} for j in jobs]})
    run = run_workflow(api, "egress")
    got = jobs_by_name(run)
    assert got["allowed"]["state"] == "COMPLETED", got["allowed"]
    for name, address in (("loopback", "127.0.0.2"), ("metadata", "169.254.169.254"),
                          ("redirect", "127.0.0.2"), ("notify", "127.0.0.2")):
        assert got[name]["state"] == "FAILED", got[name]
        assert f"egress to {address}" in got[name]["error"], got[name]["error"]
    paths = [r["path"] for r in receiver.requests[before:]]
    assert sorted(paths) == ["/echo", "/redirect"]  # the redirect's target was never reached


def test_webhook_deliveries_are_signed_with_time_and_id(api: httpx.Client) -> None:
    create_workflow(api, {"name": "signed-hook", "jobs": [
        {"name": "a", "runtime": "bash", "script": "true"}]})
    hook = api.post("/workflows/signed-hook/triggers", json={"type": "webhook"}).json()
    body = b'{"n": 1}'
    stale = signatures.sign(hook["secret"], body, "d-stale", timestamp=int(time.time()) - 600)
    assert api.post(hook["url"], content=body, headers=stale).status_code == 401
    headers = signatures.sign(hook["secret"], body, f"d-{uuid.uuid4()}")
    first = api.post(hook["url"], content=body, headers=headers)
    assert first.status_code == 202, first.text
    # The captured delivery resent under a new id is refused: the id is signed
    resent = api.post(hook["url"], content=body,
                      headers={**headers, "X-FlowForge-Delivery": f"d-{uuid.uuid4()}"})
    assert resent.status_code == 401
    again = api.post(hook["url"], content=body, headers=headers)
    assert again.json()["run_id"] == first.json()["run_id"]
    # Rotation: the old secret keeps working for the grace period, the new one at once
    rotated = api.post(f"/workflows/signed-hook/triggers/{hook['id']}/secret",
                       json={"keep_previous_seconds": 3600}).json()["secret"]
    for secret in (hook["secret"], rotated):
        signed = signatures.sign(secret, body, f"d-{uuid.uuid4()}")
        assert api.post(hook["url"], content=body, headers=signed).status_code == 202
    rows = api.get("/audit", params={"actor": f"trigger:{hook['id']}"}).json()
    assert len(rows) >= 4 and {r["outcome"] for r in rows} >= {202, 401}
    assert hook["secret"] not in str(rows) and rotated not in str(rows)


def test_secrets_of_another_namespace_are_not_found_and_not_listed(api: httpx.Client,
                                                                   stack: Stack) -> None:
    suffix = uuid.uuid4().hex[:6]
    ns_a, ns_b = f"sec-a-{suffix}", f"sec-b-{suffix}"
    for ns, name, value in ((ns_a, "tok", "value-of-a"), (ns_a, "only-a", "x"),
                            (ns_b, "tok", "value-of-b")):
        put = api.put(f"/secrets/{name}", params={"namespace": ns}, json={"value": value})
        assert put.status_code == 200, put.text
    with stack.client(new_key(api, "admin", [ns_b])) as b:  # secrets are an admin's
        # PUT and DELETE of A's secret: not found, as if A did not exist
        for method, body in (("PUT", {"value": "overwritten-by-b"}), ("DELETE", None)):
            answer = b.request(method, "/secrets/tok", params={"namespace": ns_a}, json=body)
            assert answer.status_code == 404, (method, answer.text)
            assert answer.json()["error"]["code"] == "not_found"
        # GET: a secret's value is never read back (no route); A's list is not found
        assert b.get("/secrets/tok", params={"namespace": ns_a}).status_code == 405
        assert b.get("/secrets", params={"namespace": ns_a}).status_code == 404
        listed = b.get("/secrets", params={"namespace": ns_b})
        assert listed.status_code == 200, listed.text
        assert [(s["name"], s["namespace"]) for s in listed.json()] == [("tok", ns_b)]
    # A's secrets are still there, with A's value, and listed for A
    with stack.client(new_key(api, "admin", [ns_a])) as a:
        assert sorted(s["name"] for s in a.get("/secrets", params={"namespace": ns_a}).json()) \
            == ["only-a", "tok"]
    with SyncPrefectClient(stack.prefect_url, auth_string=stack.prefect_auth) as prefect:
        stored = prefect.read_block_document_by_name(f"{ns_a}--tok", "secret",
                                                     include_secrets=True)
    assert stored.data["value"] == "value-of-a"


def test_runs_sync_and_events_of_another_namespace_are_out_of_reach(api: httpx.Client,
                                                                    stack: Stack) -> None:
    suffix = uuid.uuid4().hex[:6]
    ns_a, ns_b = f"reach-a-{suffix}", f"reach-b-{suffix}"
    of_a, of_b = f"reach-fails-{suffix}", f"reach-b-{suffix}"
    with stack.client(new_key(api, "editor", [ns_a])) as a, \
            stack.client(new_key(api, "editor", [ns_b])) as b:
        create_workflow(a, {"name": of_a, "namespace": ns_a, "jobs": [
            {"name": "a", "runtime": "bash", "script": "exit 3"}]})
        create_workflow(b, {"name": of_b, "namespace": ns_b, "jobs": [
            {"name": "a", "runtime": "bash", "script": "true"}]})
        failed = run_workflow(a, of_a)
        assert failed["state"] == "FAILED", failed
        # /sync and /sync/check: each key's report holds its own namespace's workflows only
        for client, own in ((a, of_a), (b, of_b)):
            synced = client.post("/sync")
            assert synced.status_code == 200, synced.text
            assert [w["name"] for w in synced.json()["workflows"]] == [own]
            assert synced.json()["workflows"][0]["status"] == "synced"
            check = client.get("/sync/check")
            assert check.status_code == 200, check.text
            assert [w["name"] for w in check.json()["workflows"]] == [own]
        every = api.get("/sync/check")
        assert every.status_code == 200, every.text
        assert {of_a, of_b} <= {w["name"] for w in every.json()["workflows"]}  # the admin's
        # Repairing A's failed run: not found for B; a repair for A
        refused = b.post(f"/runs/{failed['id']}/repair", json={})
        assert refused.status_code == 404, refused.text
        repaired = a.post(f"/runs/{failed['id']}/repair", json={})
        assert repaired.status_code == 201, repaired.text
        # An event into a namespace the key lacks: not found, like the namespace itself
        event = {"event": f"reach.{suffix}", "namespace": ns_a}
        into_a = b.post("/events", json=event)
        assert into_a.status_code == 404, into_a.text
        assert into_a.json()["error"]["code"] == "not_found"
        assert a.post("/events", json=event).status_code == 202
        assert b.post("/events", json={**event, "namespace": ns_b}).status_code == 202
        assert wait_run(a, repaired.json()["run_id"])["state"] == "FAILED"
