"""Issue 17's rules that test_access.py leaves out: who sets a namespace policy, what a policy
refuses, internal names (also in what a job reads of the variables), moving a server, the
per-webhook limit, audit rows of refused bodies, deep webhook bodies and the migration into
`default`.

In-process on SQLite against a dead Prefect port, as in test_access.py: each refusal tested
here is decided before the API would talk to Prefect, so a 503 where a 4xx is asserted means
the request got past the rule. What a job reads is read from a stand-in for Prefect's
variables endpoint.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from fastapi.testclient import TestClient
from prefect.client.schemas.objects import Variable
from prefect.settings import PREFECT_API_URL, temporary_settings

from api.db import MIGRATIONS, head_revision
from api.services.signatures import sign
from flowforge.core.names import split_stored_name
from flowforge.core.validation import load_workflow
from flowforge.core.workflow import spec_hash, spec_json
from flowforge.runtime import variables
from tests.unit.test_access import JOBS, bearer, make_app, new_key, with_admin_key

NS = "team-a"


@pytest.fixture(autouse=True)
def _fail_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")


@pytest.fixture
def api(tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(make_app(tmp_path, webhook_answer_seconds=0.2)) as client:
        yield with_admin_key(client, tmp_path)


def details(answer: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = answer.json()["error"]["details"]
    return found


def boxed(name: str, container: dict[str, Any], namespace: str = NS,
          settings: dict[str, Any] | None = None, **job: Any) -> dict[str, Any]:
    return {"name": name, "namespace": namespace, "settings": settings or {},
            "jobs": [{"name": "work", "runtime": "bash", "script": "true",
                      "target": {"container": container}, **job}]}


# -- 1. who may set a namespace's policy ------------------------------------------------------

def test_only_an_admin_of_every_namespace_may_set_a_namespace_policy(api: TestClient) -> None:
    scoped = bearer(new_key(api, "admin", [NS])["key"])
    before = api.get(f"/namespaces/{NS}", headers=scoped)
    assert before.status_code == 200, before.text
    assert before.json()["isolation"] == "none" and before.json()["updated_at"] is None
    loosen = {"isolation": "none", "policy": {"allow_root": True, "max_memory": None}}
    refused = api.put(f"/namespaces/{NS}", json=loosen, headers=scoped)
    assert refused.status_code == 403, refused.text
    assert refused.json()["error"]["code"] == "forbidden"
    assert "every namespace" in refused.json()["error"]["message"]
    assert api.get(f"/namespaces/{NS}").json() == before.json()  # nothing was stored
    editor = bearer(new_key(api, "editor")["key"])  # every namespace, but not an admin
    assert api.put(f"/namespaces/{NS}", json=loosen, headers=editor).status_code == 403

    tight = {"isolation": "container", "policy": {"max_pids": 512}}
    done = api.put(f"/namespaces/{NS}", json=tight)  # the ["*"] admin
    assert done.status_code == 200, done.text
    seen = api.get(f"/namespaces/{NS}", headers=scoped).json()
    assert seen["isolation"] == "container" and seen["policy"]["max_pids"] == 512
    assert seen["policy"]["allow_root"] is False
    again = api.put(f"/namespaces/{NS}", json=loosen, headers=scoped)
    assert again.status_code == 403
    assert api.get(f"/namespaces/{NS}", headers=scoped).json() == seen
    rows = api.get("/audit", params={"action": "put_namespace"}).json()
    assert sorted(r["outcome"] for r in rows) == [200, 403, 403, 403]


@pytest.mark.parametrize("name", ["flowforge", "system", "flowforge-server", "flowforge-ssh"])
def test_namespaces_that_are_flowforges_own_cannot_be_given_a_policy(api: TestClient,
                                                                      name: str) -> None:
    answer = api.put(f"/namespaces/{name}", json={"policy": {"allow_root": True}})
    assert answer.status_code == 422, answer.text
    assert details(answer)[0]["field"] in ("name", "namespace")


# -- 2. admission policies --------------------------------------------------------------------

CASES: list[tuple[str, dict[str, Any], dict[str, Any], str, str]] = [
    # (case, namespace settings, document, field refused, words of the rule)
    ("root user", {"policy": {}}, boxed("p", {"user": "root"}),
     "jobs[0].target.container.user", "allow_root"),
    ("uid 0", {"policy": {}}, boxed("p", {"user": "0:0"}),
     "jobs[0].target.container.user", "allow_root"),
    ("writable root", {"policy": {}}, boxed("p", {"read_only": False}),
     "jobs[0].target.container.read_only", "allow_writable_root"),
    ("memory", {"policy": {"max_memory": "2g"}}, boxed("p", {"memory": "3g"}),
     "jobs[0].target.container.memory", "memory 3g is over the most allowed, 2g"),
    ("pids", {"policy": {"max_pids": 1024}}, boxed("p", {"pids_limit": 2048}),
     "jobs[0].target.container.pids_limit", "pids_limit 2048 is over the most allowed, 1024"),
    ("image", {"policy": {"allowed_images": ["flowforge-runner:0.1.0"]}},
     boxed("p", {"image": "python:3.12"}),
     "jobs[0].target.container.image", "image 'python:3.12' is not among the allowed images"),
    ("default image", {"policy": {"allowed_images": ["python:3.12"]}}, boxed("p", {}),
     "jobs[0].target.container.image", "is not among the allowed images"),
    ("host network", {"policy": {}},
     boxed("p", {"network": "host"}, settings={"allow_host_network": True}),
     "jobs[0].target.container.network", "allow_host_network"),
    ("target kind", {"policy": {"allowed_targets": ["container"]}},
     {"name": "p", "namespace": NS, "jobs": JOBS},
     "jobs[0].target", "target 'local' is not allowed (allowed: container)"),
    ("target kind 2", {"policy": {"allowed_targets": ["local"]}}, boxed("p", {}),
     "jobs[0].target", "target 'container' is not allowed (allowed: local)"),
    ("for-each width", {"policy": {"max_for_each": 5}},
     {"name": "p", "namespace": NS, "jobs": [{**JOBS[0], "for_each": [1, 2], "max_parallel": 6}]},
     "jobs[0].max_parallel", "over the most allowed, 5"),
    ("for-each items", {"policy": {"max_for_each": 5}},
     {"name": "p", "namespace": NS, "jobs": [{**JOBS[0], "for_each": list(range(6)),
                                              "max_parallel": 2}]},
     "jobs[0].for_each", "over the most allowed, 5"),
    ("isolation, local by default", {"isolation": "container"},
     {"name": "p", "namespace": NS, "jobs": JOBS}, "jobs[0].target", "isolation: container"),
    ("isolation, local named", {"isolation": "container"},
     {"name": "p", "namespace": NS, "jobs": [{**JOBS[0], "target": {"local": {}}}]},
     "jobs[0].target", "isolation: container"),
]


@pytest.mark.parametrize(("ns", "document", "field", "rule"),
                         [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_a_namespace_policy_refuses_the_document_naming_job_and_rule(
        api: TestClient, ns: dict[str, Any], document: dict[str, Any], field: str,
        rule: str) -> None:
    assert api.put(f"/namespaces/{NS}", json=ns).status_code == 200
    answer = api.post("/workflows", json=document)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["code"] == "invalid_workflow"
    found = details(answer)
    assert [p["field"] for p in found] == [field], found
    job = document["jobs"][0]["name"]
    assert found[0]["job"] == job
    assert rule in found[0]["message"] and f"job '{job}'" in found[0]["message"]
    assert api.get("/workflows/p").status_code == 404  # nothing stored
    assert api.get("/workflows").json() == []


def test_max_parallel_jobs_over_the_policy_is_refused(api: TestClient) -> None:
    assert api.put(f"/namespaces/{NS}", json={"policy": {"max_parallel_jobs": 4}}).status_code == 200
    document = {"name": "wide", "namespace": NS, "settings": {"max_parallel_jobs": 5},
                "jobs": JOBS}
    answer = api.post("/workflows", json=document)
    assert answer.status_code == 422, answer.text
    [problem] = details(answer)
    assert problem["field"] == "settings.max_parallel_jobs"
    assert "max_parallel_jobs 5 is over the most" in problem["message"] and "4" in problem["message"]
    assert api.get("/workflows/wide").status_code == 404
    document["settings"] = {"max_parallel_jobs": 4}
    assert api.post("/workflows", json=document).status_code == 201  # at the limit: allowed


def test_the_policy_binds_only_its_own_namespace_and_a_replace(api: TestClient) -> None:
    assert api.put(f"/namespaces/{NS}", json={"isolation": "container"}).status_code == 200
    assert api.post("/workflows", json={"name": "free", "namespace": "team-b",
                                        "jobs": JOBS}).status_code == 201
    kept = boxed("kept", {})  # a container target passes isolation: container
    assert api.post("/workflows", json=kept).status_code == 201
    before = api.get("/workflows/kept").json()
    local = {"name": "kept", "namespace": NS, "jobs": JOBS}
    replaced = api.put("/workflows/kept", json=local)
    assert replaced.status_code == 422, replaced.text
    assert details(replaced)[0]["field"] == "jobs[0].target"
    after = api.get("/workflows/kept").json()
    assert after["spec"] == before["spec"] and after["version"] == before["version"]


WEAK: dict[str, Any] = {"user": "root", "read_only": False, "memory": "5g", "pids_limit": 5000}


def test_with_no_policy_set_the_defaults_still_refuse_what_weakens_a_container(
        api: TestClient) -> None:
    """A document cannot grant itself root, a writable root or limits past 4g / 4096 pids."""
    answer = api.post("/workflows", json=boxed("weak", WEAK, namespace="default"))
    assert answer.status_code == 422, answer.text
    found = details(answer)
    assert {p["field"] for p in found} == {f"jobs[0].target.container.{f}" for f in WEAK}
    assert all(p["job"] == "work" for p in found)
    assert any("4g" in p["message"] for p in found) and any("4096" in p["message"] for p in found)
    assert api.get("/workflows/weak").status_code == 404
    host = boxed("host", {"network": "host"}, namespace="default",
                 settings={"allow_host_network": True})
    refused = api.post("/workflows", json=host)
    assert refused.status_code == 422 and "allow_host_network" in refused.text
    # What the admin's policy grants is then allowed, and only then.
    grant = {"policy": {"allow_root": True, "allow_writable_root": True, "max_memory": None,
                        "max_pids": None, "allow_host_network": True}}
    assert api.put("/namespaces/default", json=grant).status_code == 200
    assert api.post("/workflows", json=boxed("weak", WEAK, namespace="default")).status_code == 201
    assert api.post("/workflows", json=host).status_code == 201


def test_isolation_container_leaves_jobs_that_run_no_script_alone(api: TestClient) -> None:
    assert api.put(f"/namespaces/{NS}", json={"isolation": "container"}).status_code == 200
    document = {"name": "msg", "namespace": NS, "jobs": [
        {"name": "ping", "type": "http", "url": "http://example.invalid/"}]}
    assert api.post("/workflows", json=document).status_code == 201, "http jobs run no script"


# -- 3. internal names --------------------------------------------------------------------------

INTERNAL = ["flowforge-server-x", "flowforge-ssh-web1", "flowforge-breaker-web1", "flowforge-x"]


@pytest.mark.parametrize("key", INTERNAL)
def test_variables_under_flowforges_own_names_are_refused(api: TestClient, key: str) -> None:
    for method, body in (("PUT", {"value": {"host": "evil"}}), ("GET", None), ("DELETE", None)):
        answer = api.request(method, f"/variables/{key}", json=body)
        assert answer.status_code == 422, (method, answer.text)
        [problem] = details(answer)
        assert problem["field"] == "key" and key in problem["message"], problem
        assert "FlowForge's own" in problem["message"]


@pytest.mark.parametrize("name", ["flowforge-ssh-web1", "flowforge-server-web1"])
def test_secrets_under_flowforges_own_names_are_refused(api: TestClient, name: str) -> None:
    for method, body in (("PUT", {"value": "x"}), ("DELETE", None)):
        answer = api.request(method, f"/secrets/{name}", json=body)
        assert answer.status_code == 422, (method, answer.text)
        [problem] = details(answer)
        assert problem["field"] == "name" and "FlowForge's own" in problem["message"]


@pytest.mark.parametrize("namespace", ["flowforge-server", "flowforge-ssh", "flowforge-breaker",
                                       "flowforge"])
def test_a_namespace_cannot_put_a_name_into_flowforges_own(api: TestClient,
                                                           namespace: str) -> None:
    """`team--x` is how a namespace's variable is named in Prefect: a namespace called
    `flowforge-server` would write `flowforge-server--x`, which the server directory reads as
    a server record by its prefix."""
    for path, body in ((f"/variables/x?namespace={namespace}", {"value": {"host": "evil"}}),
                       (f"/secrets/x?namespace={namespace}", {"value": "pw"})):
        answer = api.put(path, json=body)
        assert answer.status_code == 422, (path, answer.text)  # 503: it went on to Prefect
        assert details(answer)[0]["field"] == "namespace"
    doc = {"name": "inside", "namespace": namespace, "jobs": JOBS}
    answer = api.post("/workflows", json=doc)
    assert answer.status_code == 422, answer.text
    assert details(answer)[0]["field"] == "namespace"
    assert api.get("/workflows/inside").status_code == 404
    made = api.post("/api-keys", json={"name": "k", "role": "editor", "namespaces": [namespace]})
    assert made.status_code == 422 and details(made)[0]["field"] == "namespaces[0]"


@pytest.mark.parametrize(("job", "field"), [
    ({"env": {"PW": "{{ secrets['flowforge-ssh-web1'] }}"}}, "jobs[0].env.PW"),
    ({"env": {"PW": "{{ secrets['flowforge-' ~ 'ssh-web1'] }}"}}, "jobs[0].env.PW"),
    ({"type": "sql", "connection": "flowforge-ssh-web1", "query": "select 1"}, "jobs[0].connection"),
])
def test_a_template_or_job_cannot_name_an_internal_secret(api: TestClient, job: dict[str, Any],
                                                          field: str) -> None:
    base: dict[str, Any] = {"name": "thief"} if job.get("type") == "sql" else dict(JOBS[0],
                                                                                   name="thief")
    answer = api.post("/workflows", json={"name": "steal", "jobs": [{**base, **job}]})
    assert answer.status_code == 422, answer.text
    found = details(answer)
    assert [(p["field"], p["job"]) for p in found] == [(field, "thief")], found
    assert "thief" in found[0]["message"]
    assert "flowforge-ssh-web1" in found[0]["message"] or "named literally" in found[0]["message"]
    assert api.get("/workflows/steal").status_code == 404


@pytest.mark.parametrize(("stored", "expected"), [
    ("token", ("default", "token")),
    ("team-a--token", ("team-a", "token")),
    ("flowforge-server-web1", None),
    ("flowforge-ssh-web1", None),
    ("flowforge-breaker-web1", None),
    ("flowforge-server--web1", None),
    ("team-a--x--y", None),
])
def test_a_stored_name_splits_into_namespace_and_name_unless_it_is_flowforges(
        stored: str, expected: tuple[str, str] | None) -> None:
    assert split_stored_name(stored) == expected


class PrefectVariables:
    """A stand-in for Prefect's `POST /api/variables/filter` on a real 127.0.0.1 port: the
    variables as Prefect's own `Variable` model serialises them, a page of `limit` from
    `offset` at a time, as the server pages them; every filter body is recorded."""

    def __init__(self, variables: dict[str, Any]) -> None:
        rows = [Variable(name=n, value=v).model_dump(mode="json") for n, v in variables.items()]
        self.filters: list[dict[str, Any]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def _send(self, status: int, data: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if self.path != "/api/variables/filter":
                    self._send(404, b"{}")
                    return
                outer.filters.append(body)
                start = body.get("offset", 0)
                self._send(200, json.dumps(rows[start:start + body["limit"]]).encode())

            def do_GET(self) -> None:  # the client's CSRF-token probe: none here
                self._send(404, b"{}")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_job_reads_only_its_namespaces_variables_and_none_of_flowforges() -> None:
    """`flowforge.runtime.variables.read_all`, what a script job's `variables.json` holds:
    every page read, FlowForge's own records and other namespaces' variables left out."""
    many = {f"team-a--v{i}": i for i in range(450)}  # three pages of 200
    prefect = PrefectVariables({
        "shared": "of default", "team-a--shared": "of team-a", "team-b--shared": "of team-b",
        "team-b--only-b": True, "flowforge-server-web1": {"host": "10.0.0.5", "port": 22},
        "flowforge-breaker-web1": {"failures": 3}, "flowforge-server--web2": {"host": "evil"},
        "flowforge-x": 1, "team-a--x--y": "not a name anyone gave", **many})
    try:
        with temporary_settings({PREFECT_API_URL: prefect.url}):
            team_a = variables.read_all("team-a")
            assert [f["offset"] for f in prefect.filters] == [0, 200, 400]
            default = variables.read_all()
            team_b = variables.read_all("team-b")
            team_c = variables.read_all("team-c")
    finally:
        prefect.close()
    assert team_a == {"shared": "of team-a", **{f"v{i}": i for i in range(450)}}
    assert default == {"shared": "of default"}
    assert team_b == {"shared": "of team-b", "only-b": True}
    assert team_c == {}


# -- 4. moving an SSH server -------------------------------------------------------------------

def test_moving_a_server_needs_its_credential_again_and_changes_nothing(
        api: TestClient, tmp_path: Path) -> None:
    """Creating a server writes to Prefect first, so the row is put in the database here; the
    move is refused before Prefect is called, and the row is the record being moved."""
    db = sqlite3.connect(tmp_path / "flowforge.db")
    db.execute("INSERT INTO servers (name, namespace, host, port, username, tags, created_at, "
               "updated_at) VALUES ('web1', 'default', '10.0.0.5', 22, 'deploy', '[]', "
               "'2026-01-01 00:00:00', '2026-01-01 00:00:00')")
    db.commit()
    row = "SELECT host, port, username, tags, updated_at FROM servers WHERE name = 'web1'"
    before = db.execute(row).fetchall()
    for moved in ({"host": "203.0.113.9", "username": "deploy"},
                  {"host": "10.0.0.5", "port": 2222, "username": "deploy"},
                  {"host": "203.0.113.9", "username": "deploy", "passphrase": "only"}):
        answer = api.put("/servers/web1", json=moved)
        assert answer.status_code == 422, (moved, answer.text)
        [problem] = details(answer)
        assert problem["field"] in ("private_key", "passphrase"), problem
        if "passphrase" not in moved:
            assert problem["field"] == "private_key" and "credential" in problem["message"]
    assert db.execute(row).fetchall() == before
    # Not moved: no credential needed, so the request goes on (to a dead Prefect: 503).
    same = api.put("/servers/web1", json={"host": "10.0.0.5", "username": "other"})
    assert same.status_code == 503, same.text
    assert db.execute(row).fetchall() == before
    other = bearer(new_key(api, "admin", ["team-b"])["key"])
    assert api.put("/servers/web1", json={"host": "h", "username": "u"},
                   headers=other).status_code == 404
    rows = api.get("/audit", params={"target": "server:web1"}).json()
    assert sorted(r["outcome"] for r in rows) == [422, 422, 422, 503]


# -- 5. deliveries per webhook trigger ---------------------------------------------------------

def _hooks(api: TestClient, workflow: str, count: int) -> list[dict[str, str]]:
    """`count` webhook triggers of a new workflow, each with a secret: declared in the document
    (one call that tries Prefect) and given secrets by rotation (none)."""
    made = api.post("/workflows", json={"name": workflow, "jobs": JOBS,
                                        "triggers": [{"type": "webhook"}] * count})
    assert made.status_code == 201, made.text
    hooks = []
    for trigger in made.json()["spec"]["triggers"]:
        secret = api.post(f"/workflows/{workflow}/triggers/{trigger['id']}/secret", json={})
        assert secret.status_code == 200, secret.text
        hooks.append({"id": trigger["id"], "url": f"/hooks/{trigger['id']}",
                      "secret": secret.json()["secret"]})
    return hooks


def test_signed_deliveries_are_rate_limited_per_trigger_and_unsigned_ones_are_not_counted(
        tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, rate_limit_hooks="2/minute",
                             webhook_answer_seconds=0.2)) as api:
        with_admin_key(api, tmp_path)
        hook, other = _hooks(api, "w", 2)
        body = b'{"x": 1}'
        for headers in ({}, {"X-FlowForge-Signature": "sha256=00"},
                        sign("whsec_wrong", body, "d-x"), {}):
            unsigned = api.post(hook["url"], content=body, headers=headers)
            assert unsigned.status_code == 401, unsigned.text
        for delivery in ("d-1", "d-2"):
            accepted = api.post(hook["url"], content=body,
                                headers=sign(hook["secret"], body, delivery))
            assert accepted.status_code == 202, accepted.text  # the 401s used up nothing
            assert accepted.json()["status"] == "queued" and accepted.json()["run_id"] is None
        limited = api.post(hook["url"], content=body, headers=sign(hook["secret"], body, "d-3"))
        assert limited.status_code == 429, limited.text
        assert limited.json()["error"]["code"] == "rate_limited"
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        # per trigger: another webhook keeps its own allowance
        elsewhere = api.post(other["url"], content=body,
                             headers=sign(other["secret"], body, "d-1"))
        assert elsewhere.status_code == 202, elsewhere.text
        db = sqlite3.connect(tmp_path / "flowforge.db")
        stored = db.execute("SELECT trigger_id, delivery_id FROM webhook_deliveries "
                            "ORDER BY id").fetchall()
        assert stored == [(hook["id"], "d-1"), (hook["id"], "d-2"), (other["id"], "d-1")]


# -- 6. refused bodies are audited ----------------------------------------------------------------

def test_a_body_over_the_limit_leaves_an_audit_row_with_its_413(tmp_path: Path) -> None:
    with TestClient(make_app(tmp_path, max_body_bytes=2000)) as api:
        with_admin_key(api, tmp_path)
        big = json.dumps({"name": "big", "jobs": JOBS, "description": "x" * 3000})
        json_type = {"Content-Type": "application/json"}

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b" " * 1000

        sent = {
            "by-length": api.post("/workflows", content=big,
                                  headers={**json_type, "X-Request-Id": "by-length"}),
            "streamed": api.post("/workflows", content=chunks(),
                                 headers={**json_type, "X-Request-Id": "streamed"}),
            "hook": api.post("/hooks/anything", content=big,
                             headers={**json_type, "X-Request-Id": "hook",
                                      "Authorization": ""}),
        }
        for request_id, answer in sent.items():
            assert answer.status_code == 413, (request_id, answer.text)
            assert answer.json()["error"]["code"] == "payload_too_large"
        assert api.get("/workflows/big").status_code == 404
        rows = {r["request_id"]: r for r in api.get("/audit", params={"limit": 50}).json()}
        for request_id in sent:
            assert request_id in rows, (request_id, sorted(rows))
            assert rows[request_id]["outcome"] == 413, rows[request_id]
        assert rows["by-length"]["action"] == "POST /workflows"  # refused before routing
        assert rows["streamed"]["action"] == "create_workflow"
        assert rows["streamed"]["actor_name"] == "admin"


@pytest.mark.parametrize(("method", "path"), [("PUT", "/variables/x"), ("POST", "/api-keys"),
                                              ("PUT", "/namespaces/team-a")])
def test_a_streamed_body_over_the_limit_is_413_on_every_endpoint(
        tmp_path: Path, method: str, path: str) -> None:
    with TestClient(make_app(tmp_path, max_body_bytes=2000)) as api:
        with_admin_key(api, tmp_path)

        def chunks() -> Iterator[bytes]:
            for _ in range(10):
                yield b" " * 1000

        answer = api.request(method, path, content=chunks(),
                             headers={"Content-Type": "application/json"})
        # FastAPI answered its own 400 "error parsing the body" for models it parses.
        assert answer.status_code == 413, answer.text
        assert answer.json()["error"]["code"] == "payload_too_large"


# -- 7. a deep body to a signed webhook -------------------------------------------------------------

def test_a_deeply_nested_signed_delivery_is_422_naming_the_limit(api: TestClient,
                                                                tmp_path: Path) -> None:
    [hook] = _hooks(api, "deep", 1)
    for depth in (65, 1000, 100_000):  # past the bound; past Python's recursion limit too
        body = ("[" * depth + "]" * depth).encode()
        answer = api.post(hook["url"], content=body, headers={
            **sign(hook["secret"], body, f"deep-{depth}"), "Content-Type": "application/json"})
        assert answer.status_code == 422, (depth, answer.text)
        assert answer.json()["error"]["code"] == "invalid_inputs"
        [problem] = details(answer)
        assert problem["field"] == "body", depth
        assert "nested deeper than 64 levels" in problem["message"], (depth, problem)
    db = sqlite3.connect(tmp_path / "flowforge.db")
    assert db.execute("SELECT count(*) FROM webhook_deliveries").fetchone() == (0,)
    body = b"[[[]]]"  # within the bound: accepted
    fine = api.post(hook["url"], content=body, headers=sign(hook["secret"], body, "shallow"))
    assert fine.status_code == 202, fine.text


# -- 8. the migration into `default` ------------------------------------------------------------

def test_data_from_before_namespaces_moves_into_default(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'flowforge.db'}"
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    command.upgrade(cfg, "0004")
    wf = load_workflow({"name": "legacy", "jobs": JOBS})
    db = sqlite3.connect(tmp_path / "flowforge.db")
    assert "namespace" not in [c[1] for c in db.execute("PRAGMA table_info(workflows)")]
    now = "2026-01-01 00:00:00"
    db.execute("INSERT INTO workflows (name, description, version, spec_hash, spec, sync_status,"
               " deleted, created_at, updated_at) VALUES (?, NULL, 1, ?, ?, 'pending', 0, ?, ?)",
               ("legacy", spec_hash(wf), spec_json(wf), now, now))
    db.execute("INSERT INTO jobs (workflow_id, name, type, runtime, position) "
               "VALUES (1, 'a', 'script', 'bash', 0)")
    db.execute("INSERT INTO servers (name, host, port, username, tags, created_at, updated_at) "
               "VALUES ('web1', '10.0.0.5', 22, 'deploy', '[\"web\"]', ?, ?)", (now, now))
    db.commit()
    db.close()

    with TestClient(make_app(tmp_path)) as api:  # migrates to head at start-up
        with_admin_key(api, tmp_path)
        db = sqlite3.connect(tmp_path / "flowforge.db")
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [
            (head_revision(),)]
        assert db.execute("SELECT name, namespace FROM workflows").fetchall() == [
            ("legacy", "default")]
        assert db.execute("SELECT name, namespace FROM servers").fetchall() == [
            ("web1", "default")]
        everyone = api.get("/workflows/legacy")
        assert everyone.status_code == 200, everyone.text
        assert everyone.json()["namespace"] == "default"
        assert everyone.json()["spec"]["jobs"][0]["script"] == "true"
        default = bearer(new_key(api, "viewer", ["default"])["key"])
        team_b = bearer(new_key(api, "viewer", ["team-b"])["key"])
        assert api.get("/workflows/legacy", headers=default).status_code == 200
        assert [w["name"] for w in api.get("/workflows", headers=default).json()] == ["legacy"]
        assert api.get("/workflows/legacy", headers=team_b).status_code == 404
        assert api.get("/workflows", headers=team_b).json() == []
        # the server too: another namespace's key is told it does not exist; the default
        # namespace's finds it (and then needs Prefect, which is down)
        assert api.get("/servers/web1", headers=team_b).status_code == 404
        assert api.get("/servers/web1", headers=default).status_code == 503
