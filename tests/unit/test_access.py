"""Keys, roles, namespaces, the audit log and the request limits, in-process on SQLite.

Prefect is a dead port here: everything tested is decided before the API would talk to it.
The role x endpoint matrix walks the app's own routes, so a route added without a permission,
or with the wrong one, fails here.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts
from fastapi.testclient import TestClient

from api.auth import MINIMUM, Allow, Role
from api.deps import public
from api.main import create_app
from api.settings import ApiSettings
from flowforge.core.document import parse_document
from flowforge.core.validation import load_workflow
from tests.conftest import with_admin_key
from tests.unit.test_trigger_api import dead_port

JOBS = [{"name": "a", "runtime": "bash", "script": "true"}]
ROLES = ("viewer", "runner", "editor", "admin")


def make_app(tmp_path: Path, **settings: Any) -> FastAPI:
    return create_app(ApiSettings(home=tmp_path, prefect_api_url=f"http://127.0.0.1:{dead_port()}/api",
                                  prefect_timeout=1, prefect_deadline=3, sync_interval=3600,
                                  **settings))


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")
    with TestClient(make_app(tmp_path)) as client:
        yield with_admin_key(client, tmp_path)


def new_key(api: TestClient, role: str, namespaces: list[str] | None = None,
            **extra: Any) -> dict[str, Any]:
    made = api.post("/api-keys", json={"name": f"{role}-key", "role": role,
                                       "namespaces": namespaces or ["*"], **extra})
    assert made.status_code == 201, made.text
    body: dict[str, Any] = made.json()
    return body


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def declared(route: APIRoute) -> list[Any]:
    """The permission declarations in a route's dependency tree: `Allow`s and `public`."""
    found: list[Any] = []
    stack = list(route.dependant.dependencies)
    while stack:
        dependency = stack.pop()
        if isinstance(dependency.call, Allow) or dependency.call is public:
            found.append(dependency.call)
        stack.extend(dependency.dependencies)
    return found


def api_routes(app: FastAPI) -> list[tuple[str, str, APIRoute]]:
    out = []
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute):
            for method in sorted(context.methods or ()):
                out.append((method, str(context.path), route))
    return out


def test_every_route_declares_exactly_one_permission(api: TestClient) -> None:
    routes = api_routes(api.app)  # type: ignore[arg-type]
    assert len(routes) > 40
    public_routes = set()
    for method, path, route in routes:
        found = declared(route)
        assert len(found) == 1, f"{method} {path} declares {found or 'no permission'}"
        if found[0] is public:
            public_routes.add(f"{method} {path}")
    assert public_routes == {"GET /healthz", "POST /hooks/{trigger_id}"}


def _call(api: TestClient, method: str, path: str, key: str) -> int:
    url = path.replace("{", "").replace("}", "")  # /workflows/name: a name that is not there
    kwargs: dict[str, Any] = {"headers": bearer(key)}
    if method in ("POST", "PUT", "PATCH"):
        kwargs["json"] = {}
    return api.request(method, url, **kwargs).status_code


def test_role_by_endpoint_matrix(api: TestClient) -> None:
    """Each role is refused (403) exactly the routes above it and let through the others;
    nothing answers 5xx but 503 (Prefect is down)."""
    keys = {role: new_key(api, role)["key"] for role in ROLES}
    checked = 0
    for method, path, route in api_routes(api.app):  # type: ignore[arg-type]
        (permission,) = declared(route)
        if permission is public:
            continue
        needed = MINIMUM[permission.permission]
        for role in ROLES:
            status = _call(api, method, path, keys[role])
            allowed = Role[role] >= needed
            where = f"{method} {path} as {role} (needs {needed.name})"
            if allowed:
                assert status not in (401, 403), f"{where}: {status}"
            else:
                assert status == 403, f"{where}: {status}"
            assert status < 500 or status == 503, f"{where}: {status}"
            checked += 1
    assert checked > 150


def test_a_namespaced_admin_cannot_touch_what_belongs_to_every_namespace(api: TestClient) -> None:
    scoped = new_key(api, "admin", ["team-a"])["key"]
    refused = api.put("/concurrency-limits/x", json={"limit": 1}, headers=bearer(scoped))
    assert refused.status_code == 403, refused.text
    assert "every namespace" in refused.json()["error"]["message"]
    too_wide = api.post("/api-keys", json={"name": "x", "role": "viewer", "namespaces": ["*"]},
                        headers=bearer(scoped))
    assert too_wide.status_code == 403
    other = api.post("/api-keys", json={"name": "x", "role": "viewer", "namespaces": ["team-b"]},
                     headers=bearer(scoped))
    assert other.status_code == 403
    assert new_key(api, "viewer", ["team-a"])  # the global admin may
    own = api.post("/api-keys", json={"name": "x", "role": "editor", "namespaces": ["team-a"]},
                   headers=bearer(scoped))
    assert own.status_code == 201, own.text


@pytest.mark.parametrize("header", [None, "Basic abc", "Bearer ", "Bearer ffk_" + "x" * 43,
                                    "Bearer not-a-key"])
def test_no_usable_key_is_401_with_the_error_shape(api: TestClient, header: str | None) -> None:
    headers = {"Authorization": header} if header is not None else {}
    api.headers.pop("Authorization")
    answer = api.get("/workflows", headers=headers)
    assert answer.status_code == 401, answer.text
    assert answer.json()["error"]["code"] == "unauthenticated"


def test_the_first_admin_key_is_a_private_file_and_keys_are_stored_as_hashes(
        api: TestClient, tmp_path: Path) -> None:
    path = tmp_path / "admin.key"
    assert path.stat().st_mode & 0o777 == 0o600
    key = path.read_text().strip()
    assert key.startswith("ffk_") and len(key) >= 40
    made = new_key(api, "viewer")
    assert made["key"].startswith("ffk_") and made["prefix"] == made["key"][:10]
    listed = api.get("/api-keys").json()
    assert {k["name"] for k in listed} == {"admin", "viewer-key"}
    assert all("key" not in k and "key_hash" not in k for k in listed)
    db = (tmp_path / "flowforge.db").read_bytes()
    assert key.encode() not in db and made["key"].encode() not in db


def test_revoked_and_expired_keys_are_401_at_once(api: TestClient) -> None:
    made = new_key(api, "viewer")
    assert api.get("/workflows", headers=bearer(made["key"])).status_code == 200
    assert api.delete(f"/api-keys/{made['id']}").status_code == 204
    gone = api.get("/workflows", headers=bearer(made["key"]))
    assert gone.status_code == 401 and "revoked" in gone.json()["error"]["message"]
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    short = new_key(api, "viewer", expires_at=soon)
    assert api.get("/workflows", headers=bearer(short["key"])).status_code == 200
    time.sleep(1.2)
    late = api.get("/workflows", headers=bearer(short["key"]))
    assert late.status_code == 401 and "expired" in late.json()["error"]["message"]
    past = api.post("/api-keys", json={"name": "p", "role": "viewer",
                                       "expires_at": "2000-01-01T00:00:00Z"})
    assert past.status_code == 422 and past.json()["error"]["details"][0]["field"] == "expires_at"


def test_namespaces_hide_workflows_of_other_namespaces(api: TestClient) -> None:
    for ns in ("team-a", "team-b"):
        created = api.post("/workflows", json={"name": f"wf-{ns}", "namespace": ns, "jobs": JOBS})
        assert created.status_code == 201, created.text
    assert api.post("/workflows", json={"name": "wf-default", "jobs": JOBS}).status_code == 201
    a = bearer(new_key(api, "editor", ["team-a"])["key"])
    names = [w["name"] for w in api.get("/workflows", headers=a).json()]
    assert names == ["wf-team-a"]
    for path in ("/workflows/wf-team-b", "/workflows/wf-default", "/workflows/wf-team-b/triggers"):
        assert api.get(path, headers=a).status_code == 404, path
    assert api.delete("/workflows/wf-team-b", headers=a).status_code == 404
    assert api.get("/workflows/wf-team-b").status_code == 200  # still there
    # A document naming a namespace the key lacks is refused, and nothing is stored.
    refused = api.post("/workflows", json={"name": "sneaky", "namespace": "team-b", "jobs": JOBS},
                       headers=a)
    assert refused.status_code in (403, 404), refused.text
    assert api.get("/workflows/sneaky").status_code == 404
    # A dependency on a workflow the key cannot read is a 422, not a way to learn it exists.
    dep = api.post("/workflows", headers=a, json={
        "name": "downstream", "namespace": "team-a", "jobs": JOBS,
        "triggers": [{"type": "dependency", "upstream": ["wf-team-b"]}]})
    assert dep.status_code == 422, dep.text
    assert "wf-team-b" in json.dumps(dep.json()["error"]["details"])


def test_sync_with_a_namespaced_key_syncs_only_its_namespace(api: TestClient) -> None:
    """POST /sync of a key of some namespaces (Prefect is down: each row is tried and marked
    pending); it answered 500 before, for any key not of every namespace."""
    for ns in ("team-a", "team-b"):
        made = api.post("/workflows", json={"name": f"wf-{ns}", "namespace": ns, "jobs": JOBS})
        assert made.status_code == 201, made.text
    for ns in ("team-a", "team-b"):
        scoped = api.post("/sync", headers=bearer(new_key(api, "editor", [ns])["key"]))
        assert scoped.status_code == 200, scoped.text
        assert [(w["name"], w["status"]) for w in scoped.json()["workflows"]] == [
            (f"wf-{ns}", "pending")]
    both = bearer(new_key(api, "editor", ["team-a", "team-b"])["key"])
    assert [w["name"] for w in api.post("/sync", headers=both).json()["workflows"]] == [
        "wf-team-a", "wf-team-b"]
    everyone = api.post("/sync")
    assert everyone.status_code == 200, everyone.text
    assert [w["name"] for w in everyone.json()["workflows"]] == ["wf-team-a", "wf-team-b"]


def test_every_mutation_is_one_audit_row_without_secrets(api: TestClient, tmp_path: Path) -> None:
    api.post("/workflows", json={"name": "audited", "jobs": JOBS}, headers={"X-Request-Id": "req-1"})
    made = new_key(api, "runner")
    api.put("/secrets/db-password", json={"value": "s3cr3t-value-123"})  # 503: Prefect is down
    api.headers.pop("Authorization")
    api.delete("/workflows/audited")  # no key: 401, recorded too
    with_admin_key(api, tmp_path)
    rows = api.get("/audit", params={"limit": 50}).json()
    actions = [(r["action"], r["outcome"]) for r in rows]
    assert ("create_workflow", 201) in actions, actions
    # refused before routing: the row names the method and path
    assert ("create_key", 201) in actions and ("DELETE /workflows/audited", 401) in actions
    assert any(a == "put_secret" for a, _ in actions), actions
    first = next(r for r in rows if r["action"] == "create_workflow")
    assert first["actor_name"] == "admin" and first["request_id"] == "req-1"
    assert first["namespace"] == "default" and first["target"] == "workflow:audited"
    assert first["client"] == "testclient"
    text = json.dumps(rows)
    assert "s3cr3t-value-123" not in text and made["key"] not in text
    db = sqlite3.connect(tmp_path / "flowforge.db")
    dumped = "\n".join(str(row) for row in db.execute("SELECT * FROM audit_log"))
    assert "s3cr3t-value-123" not in dumped and made["key"] not in dumped
    only = api.get("/audit", params={"action": "create_key"}).json()
    assert [r["action"] for r in only] == ["create_key"]
    assert api.get("/audit", params={"limit": 100000}).status_code == 422
    viewer = bearer(new_key(api, "editor")["key"])
    assert api.get("/audit", headers=viewer).status_code == 403


def test_bodies_over_the_limit_are_413_before_they_are_read(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")
    with TestClient(make_app(tmp_path, max_body_bytes=2000)) as api:
        with_admin_key(api, tmp_path)
        big = json.dumps({"name": "big", "jobs": JOBS, "description": "x" * 3000})
        for path in ("/workflows", "/workflows/big/validate", "/variables/x", "/hooks/anything"):
            answer = api.post(path, content=big, headers={"Content-Type": "application/json"})
            assert answer.status_code == 413, (path, answer.text)
            assert answer.json()["error"]["details"] == {"limit": 2000}

        def chunks() -> Iterator[bytes]:  # no Content-Length: counted as it streams
            for _ in range(10):
                yield b" " * 1000

        streamed = api.post("/workflows", content=chunks(), headers={"Content-Type": "application/json"})
        assert streamed.status_code == 413


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded",
                                          "multipart/form-data; boundary=x"])
def test_a_body_that_is_neither_json_nor_yaml_is_415(api: TestClient, content_type: str) -> None:
    """A cross-origin page can send these without a preflight (CSRF): never read them."""
    doc = json.dumps({"name": "csrf", "jobs": JOBS, "triggers": [
        {"type": "schedule", "cron": "* * * * *"}]})
    answer = api.post("/workflows", content=doc, headers={"Content-Type": content_type})
    assert answer.status_code == 415, answer.text
    assert api.get("/workflows/csrf").status_code == 404


@pytest.mark.parametrize("syntax", ["json", "yaml"])
def test_deep_or_exploding_documents_are_422_naming_the_limit(api: TestClient, syntax: str) -> None:
    deep = "[" * 1000 + "]" * 1000 if syntax == "json" else "a: " + "[" * 1000 + "]" * 1000
    assert api.post("/workflows", json={"name": "deep", "jobs": JOBS}).status_code == 201
    for path in ("/workflows", "/workflows/deep/validate"):
        answer = api.post(path, content=deep, headers={"Content-Type": f"application/{syntax}"})
        assert answer.status_code == 422, (path, answer.text)
        assert "nested deeper than 64" in answer.text
    bomb = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}]\n" for i in range(8))
    started = time.monotonic()
    answer = api.post("/workflows", content=bomb, headers={"Content-Type": "application/yaml"})
    assert answer.status_code == 422 and "alias bomb" in answer.text, answer.text
    assert time.monotonic() - started < 10  # a sanity bound: it used to take 41.7 s


async def test_healthz_answers_while_a_large_document_is_parsed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A large document (under the body limit) takes seconds to parse: in a worker thread, so
    the event loop serves other requests meanwhile. Parsed on the loop, the first answer to
    /healthz would come only after the whole parse."""
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")
    # 100,000 one-item lists: ~400 kB of YAML (the limit is 1 MiB), each value built in Python
    doc = (f"name: large\njobs: {json.dumps(JOBS)}\n"
           "outputs:\n  data: [" + ",".join(["[0]"] * 100_000) + "]\n")
    assert len(doc) < ApiSettings.model_fields["max_body_bytes"].default
    started = time.monotonic()
    load_workflow(parse_document(doc, "yaml"))
    parse_seconds = time.monotonic() - started  # what the API's parse takes at the least
    settings = ApiSettings(home=tmp_path, prefect_api_url=f"http://127.0.0.1:{dead_port()}/api",
                           prefect_timeout=1, prefect_deadline=0.5, sync_interval=3600,
                           health_timeout=0.05)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        key = (tmp_path / "admin.key").read_text().strip()
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), timeout=120,
                                     base_url="http://api", headers=bearer(key)) as client:
            sent = time.monotonic()
            post = asyncio.create_task(client.post(
                "/workflows", content=doc, headers={"Content-Type": "application/yaml"}))
            await asyncio.sleep(0.05)  # the POST is sent and its parse begins
            health = await client.get("/healthz")
            answered = time.monotonic() - sent
            still_parsing = not post.done()
            created = await post
    assert created.status_code == 201, created.text
    # /healthz answered (503: Prefect is a dead port here) ...
    assert health.status_code == 503, health.text
    assert health.json()["error"]["details"]["api"] == "ok"
    # ... during the POST, long before the parse could have ended on the loop
    assert still_parsing
    assert answered < 0.8 * parse_seconds, (answered, parse_seconds)


def test_declared_json_is_read_as_json_only(api: TestClient) -> None:
    answer = api.post("/workflows", content="name: yaml-body\njobs: []",
                      headers={"Content-Type": "application/json"})
    assert answer.status_code == 422 and "not valid JSON" in answer.text


def test_run_starts_are_rate_limited_per_key_with_retry_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")
    with TestClient(make_app(tmp_path, rate_limit_runs="2/minute")) as api:
        with_admin_key(api, tmp_path)
        api.post("/workflows", json={"name": "w", "jobs": JOBS})
        statuses = [api.post("/workflows/w/runs", json={}).status_code for _ in range(3)]
        assert statuses[:2] != [429, 429] and statuses[2] == 429, statuses
        limited = api.post("/workflows/w/runs", json={})
        assert limited.status_code == 429
        assert 1 <= int(limited.headers["Retry-After"]) <= 60
        assert limited.json()["error"]["code"] == "rate_limited"
        other = bearer(new_key(api, "runner")["key"])  # per key: another key may still start
        assert api.post("/workflows/w/runs", json={}, headers=other).status_code != 429


def test_failed_authentications_are_rate_limited_per_client(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")
    with TestClient(make_app(tmp_path, rate_limit_auth="3/minute")) as api:
        good = with_admin_key(api, tmp_path).headers["Authorization"]
        for _ in range(3):
            assert api.get("/workflows", headers={"Authorization": "Bearer ffk_" + "0" * 43}
                           ).status_code == 401
        blocked = api.get("/workflows", headers={"Authorization": good})
        assert blocked.status_code == 429 and "Retry-After" in blocked.headers
        assert api.get("/healthz").status_code != 429  # liveness needs no key


def test_cors_is_off_unless_origins_are_listed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")
    origin = {"Origin": "http://evil.example"}
    with TestClient(make_app(tmp_path)) as api:
        with_admin_key(api, tmp_path)
        assert "access-control-allow-origin" not in api.get("/workflows", headers=origin).headers
    with TestClient(make_app(tmp_path, cors_origins="http://ui.example")) as api:
        with_admin_key(api, tmp_path)
        answer = api.get("/workflows", headers={"Origin": "http://ui.example"})
        assert answer.headers["access-control-allow-origin"] == "http://ui.example"
        assert "access-control-allow-origin" not in api.get("/workflows", headers=origin).headers


def test_the_docs_are_public_and_the_document_defines_every_schema(api: TestClient) -> None:
    api.headers.pop("Authorization")
    for path in ("/docs", "/openapi.json", "/redoc"):
        assert api.get(path).status_code == 200, path
    spec = api.get("/openapi.json").json()
    assert "HTTPBearer" in json.dumps(spec["components"].get("securitySchemes", {})) or \
        spec["components"].get("securitySchemes"), "the document says keys are needed"


def test_offsets_and_limits_are_bounded(api: TestClient) -> None:
    for path in ("/variables?offset=65815926592989667328", "/workflows/x/runs?limit=100000",
                 "/audit?limit=0", "/audit?offset=10000000000"):
        answer = api.get(path)
        assert answer.status_code == 422, (path, answer.text)


def test_limits_are_shared_by_api_processes_through_redis(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, redis_url: str) -> None:
    """Two apps on one database and one real Redis (as two API replicas would be): failed
    authentications counted on either block the client on both; without Redis they do not."""
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")
    wrong = {"Authorization": "Bearer ffk_" + "1" * 43}
    with TestClient(make_app(tmp_path, rate_limit_auth="3/minute", redis_url=redis_url)) as one, \
            TestClient(make_app(tmp_path, rate_limit_auth="3/minute", redis_url=redis_url)) as two:
        good = with_admin_key(one, tmp_path).headers["Authorization"]
        assert one.get("/workflows", headers=wrong).status_code == 401
        assert two.get("/workflows", headers=wrong).status_code == 401
        assert one.get("/workflows", headers=wrong).status_code == 401
        blocked = two.get("/workflows", headers={"Authorization": good})
        assert blocked.status_code == 429 and "Retry-After" in blocked.headers
    home = tmp_path / "apart"
    home.mkdir()
    with TestClient(make_app(home, rate_limit_auth="3/minute")) as one, \
            TestClient(make_app(home, rate_limit_auth="3/minute")) as two:
        good = with_admin_key(one, home).headers["Authorization"]
        for client in (one, two, one):
            assert client.get("/workflows", headers=wrong).status_code == 401
        assert two.get("/workflows", headers={"Authorization": good}).status_code == 200


def test_audit_filters_by_namespace_and_since(api: TestClient) -> None:
    """`?namespace=` keeps one namespace's rows; `?since=` the rows at or after that instant,
    whatever offset the instant is written with."""
    for ns in ("team-a", "team-b"):
        made = api.post("/workflows", json={"name": f"early-{ns}", "namespace": ns, "jobs": JOBS})
        assert made.status_code == 201, made.text
    time.sleep(0.05)
    cut = datetime.now(UTC)
    time.sleep(0.05)
    for ns in ("team-a", "team-b"):
        made = api.post("/workflows", json={"name": f"late-{ns}", "namespace": ns, "jobs": JOBS})
        assert made.status_code == 201, made.text

    def targets(**params: Any) -> list[str]:
        answer = api.get("/audit", params={"action": "create_workflow", **params})
        assert answer.status_code == 200, answer.text
        return sorted(r["target"] for r in answer.json())

    assert targets() == ["workflow:early-team-a", "workflow:early-team-b",
                         "workflow:late-team-a", "workflow:late-team-b"]
    team_a = api.get("/audit", params={"namespace": "team-a"}).json()
    assert team_a and {r["namespace"] for r in team_a} == {"team-a"}
    assert targets(namespace="team-a") == ["workflow:early-team-a", "workflow:late-team-a"]
    assert targets(namespace="team-c") == []
    later = ["workflow:late-team-a", "workflow:late-team-b"]
    assert targets(since=cut.isoformat()) == later
    assert targets(since=cut.isoformat().replace("+00:00", "Z")) == later
    # The same instant two hours east of UTC: the filter compares instants, not clock faces.
    east = cut.astimezone(timezone(timedelta(hours=2))).isoformat()
    assert targets(since=east) == later
    west = cut.astimezone(timezone(timedelta(hours=-5))).isoformat()
    assert targets(since=west) == later
    assert targets(since=cut.replace(tzinfo=None).isoformat()) == later  # no offset: UTC
    assert targets(since=cut.isoformat(), namespace="team-b") == ["workflow:late-team-b"]
    assert targets(since=(cut + timedelta(hours=1)).isoformat()) == []
    assert api.get("/audit", params={"since": "yesterday"}).status_code == 422
