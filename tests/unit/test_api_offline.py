"""The API's own rules, decided before anything is sent to Prefect (which is down here).

Module names of workflows, the error shape and its statuses, the OpenAPI document: in-process
on SQLite, fast.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from api.errors import STATUS, status_of
from api.main import create_app
from api.settings import ApiSettings
from flowforge.core import errors
from tests.conftest import with_admin_key
from tests.unit.test_trigger_api import dead_port

JOBS = [{"name": "a", "runtime": "bash", "script": "true"}]


@pytest.fixture
def api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")  # fail fast on the dead port
    settings = ApiSettings(home=tmp_path, prefect_api_url=f"http://127.0.0.1:{dead_port()}/api",
                           prefect_timeout=1, sync_interval=3600)
    with TestClient(create_app(settings)) as client:
        yield with_admin_key(client, tmp_path)


def test_two_workflows_that_would_share_a_module_are_refused(api: TestClient) -> None:
    """`coll-a` and `coll_a` both compile to flows/coll_a.py: a run of one ran the other's code."""
    assert api.post("/workflows", json={"name": "coll-a", "jobs": JOBS}).status_code == 201
    clash = api.post("/workflows", json={"name": "coll_a", "jobs": JOBS})
    assert clash.status_code == 409, clash.text
    error = clash.json()["error"]
    assert error["details"] == {"workflow": "coll_a", "conflicts_with": "coll-a"}
    assert "flows/coll_a.py" in error["message"]
    assert api.get("/workflows/coll_a").status_code == 404  # nothing stored
    assert api.post("/workflows", json={"name": "coll-b", "jobs": JOBS}).status_code == 201


def test_every_error_class_has_a_status_and_only_the_api_knows_it() -> None:
    for cls in (errors.SpecError, errors.InputError, errors.NotFoundError,
                errors.ConflictError, errors.PrefectUnavailableError, errors.JobError):
        assert not hasattr(cls, "status"), cls
    assert status_of(errors.NotFoundError("x")) == 404
    assert status_of(errors.SshError("refused", "x")) == 500  # a job error: never an answer
    assert status_of(errors.JobError("x")) == 500
    assert set(STATUS.values()) == {401, 403, 404, 409, 413, 415, 422, 429, 503}


def test_the_openapi_document_defines_every_schema_it_refers_to(api: TestClient) -> None:
    document = api.get("/openapi.json").json()
    defined = set(document["components"]["schemas"])

    def refs(node: Any) -> Iterator[str]:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    yield value.removeprefix("#/components/schemas/")
                else:
                    yield from refs(value)
        elif isinstance(node, list):
            for value in node:
                yield from refs(value)

    missing = {ref for ref in refs(document) if ref not in defined}
    assert missing == set()
    body = document["paths"]["/workflows"]["post"]["requestBody"]["content"]["application/json"]
    assert body["schema"] == {"$ref": "#/components/schemas/WorkflowDocument"}
    assert {"ScriptJob", "HttpJob", "SqlJob", "Need", "Target"} <= defined


def test_healthz_answers_while_prefect_is_frozen(tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """A Prefect server that accepts connections but never answers (a frozen event loop) is
    reported as down within the check's own bound, not after the client's minute of retries."""
    import socket
    import time

    monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", "0")
    frozen = socket.socket()
    frozen.bind(("127.0.0.1", 0))
    frozen.listen(16)  # connections complete in the kernel; nobody ever reads them
    port = frozen.getsockname()[1]
    settings = ApiSettings(home=tmp_path, prefect_api_url=f"http://127.0.0.1:{port}/api",
                           prefect_timeout=30, sync_interval=3600, health_timeout=1)
    try:
        with TestClient(create_app(settings)) as client:
            started = time.monotonic()
            answer = client.get("/healthz")
            took = time.monotonic() - started
    finally:
        frozen.close()
    assert answer.status_code == 503, answer.text
    error = answer.json()["error"]
    assert error["code"] == "unhealthy"
    assert error["details"]["database"] == "ok"
    assert "no answer within 1s" in error["details"]["prefect"]
    assert error["details"]["worker"] == "unknown"
    assert took < 15  # generous: the point is not the client's 30 s timeout
