"""Storage on PostgreSQL: migrations, versions, child rows, and nothing half-written."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.db import head_revision, sync_url
from api.main import create_app
from api.settings import ApiSettings as Settings
from tests.conftest import Stack, create_workflow, run_workflow, start_stack, with_admin_key
from tests.fixtures.postgres import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.postgres]

DOC = {
    "name": "pg-etl",
    "jobs": [
        {"name": "a", "runtime": "bash", "script": "true"},
        {"name": "b", "runtime": "bash", "script": "true"},
        {"name": "c", "runtime": "python", "script": "print(1)", "needs": ["a", "b"]},
    ],
    "triggers": [{"type": "schedule", "cron": "0 3 * * *", "timezone": "Europe/Paris"}],
}


@pytest.fixture
def pg_client(postgres_url: str, stack: Stack, tmp_path: Path) -> Iterator[TestClient]:
    settings = Settings(home=tmp_path, database_url=postgres_url,
                        prefect_api_url=stack.prefect_url, sync_interval=3600,
                        prefect_auth_string=stack.prefect_auth)
    with TestClient(create_app(settings)) as client:
        yield with_admin_key(client, tmp_path)


def _count(url: str, table: str) -> int:
    engine = sa.create_engine(sync_url(url))
    with engine.connect() as conn:
        value = conn.execute(sa.text(f"SELECT count(*) FROM {table}")).scalar_one()
    engine.dispose()
    return int(value)


def test_crud_on_postgres(pg_client: TestClient, postgres_url: str) -> None:
    engine = sa.create_engine(sync_url(postgres_url))
    with engine.connect() as conn:
        version = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one()
        assert version == head_revision()
    engine.dispose()

    created = pg_client.post("/workflows", json=DOC)
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["version"] == 1 and body["sync"]["status"] == "synced"
    assert (_count(postgres_url, "jobs"), _count(postgres_url, "dependencies"),
            _count(postgres_url, "triggers")) == (3, 2, 1)

    assert pg_client.post("/workflows", json=DOC).status_code == 409
    same = pg_client.put("/workflows/pg-etl", json=DOC).json()
    assert same["version"] == 1 and same["spec_hash"] == body["spec_hash"]
    changed = {**DOC, "jobs": DOC["jobs"][:2]}
    updated = pg_client.put("/workflows/pg-etl", json=changed).json()
    assert updated["version"] == 2 and updated["jobs"] == 2
    # with no `needs` left anywhere, the sequential fallback chains a -> b: one dependency row
    assert (_count(postgres_url, "jobs"), _count(postgres_url, "dependencies")) == (2, 1)

    bad = {**DOC, "jobs": [*DOC["jobs"], {"name": "d", "runtime": "bash", "script": "x",
                                          "needs": ["zz"]}]}
    response = pg_client.put("/workflows/pg-etl", json=bad)
    assert response.status_code == 422
    assert pg_client.get("/workflows/pg-etl").json()["version"] == 2
    assert _count(postgres_url, "jobs") == 2

    assert pg_client.delete("/workflows/pg-etl").status_code == 204
    assert pg_client.get("/workflows/pg-etl").status_code == 404
    assert (_count(postgres_url, "workflows"), _count(postgres_url, "jobs")) == (0, 0)


def test_flowforge_up_runs_prefect_on_postgres(postgres_server: PostgresServer,
                                               tmp_path: Path) -> None:
    """FLOWFORGE_PREFECT_DATABASE_URL: the Prefect server `flowforge up` starts keeps its
    state in PostgreSQL (what bursts of webhook deliveries need, docs/performance.md)."""
    url = postgres_server.create_database("prefect_up")
    with start_stack(tmp_path, FLOWFORGE_PREFECT_DATABASE_URL=url) as stack, \
            stack.client() as api:
        create_workflow(api, {"name": "pg-prefect", "jobs": [
            {"name": "a", "runtime": "bash", "script": "echo on-postgres"}]})
        run = run_workflow(api, "pg-prefect")
        assert run["state"] == "COMPLETED", run
    assert not (tmp_path / "prefect" / "prefect.db").exists()
    assert _count(url, "flow_run") >= 1


def test_replicas_migrating_a_fresh_database_at_once(postgres_server: PostgresServer) -> None:
    """Several API processes starting together: one migrates, the others find it done."""
    from concurrent.futures import ThreadPoolExecutor

    from api.db import migrate

    postgres_server.create_database("migrate_race")
    url = postgres_server.url_for("migrate_race")
    pool = ThreadPoolExecutor(4)
    try:  # without the lock they deadlock or collide: fail, do not hang
        for result in [pool.submit(migrate, url) for _ in range(4)]:
            result.result(timeout=120)
    finally:
        pool.shutdown(wait=False)
    engine = sa.create_engine(sync_url(url))
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar_one() \
            == head_revision()
    engine.dispose()
