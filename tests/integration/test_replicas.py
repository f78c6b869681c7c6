"""Several API processes on one PostgreSQL database sync a workflow once, not once each.

Each "replica" here is an engine of its own (its own connection pool, as a process has) on
the same database, deploying to the real Prefect server of the session's stack. `deploy.deploy`
is wrapped to count calls, then calls through to Prefect.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from api.db import make_engine, migrate, sessionmaker
from api.services import sync, workflows
from api.tables import WorkflowRow
from flowforge.controlplane import deploy
from flowforge.controlplane.client import PrefectTarget
from flowforge.core.workflow import Workflow
from tests.conftest import Stack
from tests.fixtures.postgres import PostgresServer

pytestmark = [pytest.mark.integration, pytest.mark.postgres]


@pytest.fixture
async def replicas(postgres_server: PostgresServer, stack: Stack,
                   tmp_path: Path) -> AsyncIterator[tuple[list[AsyncEngine], PrefectTarget, str]]:
    database = f"replicas_{int(time.time() * 1000) % 10**9}"
    postgres_server.create_database(database)
    url = postgres_server.url_for(database)
    await asyncio.to_thread(migrate, url)
    engines = [make_engine(url), make_engine(url)]
    target = PrefectTarget(api_url=stack.prefect_url, project_dir=tmp_path / "project",
                           work_pool="flowforge-process", auth_string=stack.prefect_auth)
    (tmp_path / "project").mkdir()
    try:
        yield engines, target, url
    finally:
        for engine in engines:
            await engine.dispose()


class Unshared(dict[str, asyncio.Lock]):
    """Each caller its own in-process lock, as each API process has: what is left to keep two
    replicas apart is the lock they share through the database."""

    def setdefault(self, key: str, default: asyncio.Lock | None = None) -> asyncio.Lock:
        return asyncio.Lock()


def counting(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, float, float]]:
    """Deploys as they start: (workflow, start, end); end is 0 until the deploy is done."""
    calls: list[tuple[str, float, float]] = []
    real = deploy.deploy
    monkeypatch.setattr(sync, "_sync_locks", Unshared())

    async def spy(wf: Workflow, target: PrefectTarget) -> Any:
        index = len(calls)
        calls.append((wf.name, time.monotonic(), 0.0))
        await asyncio.sleep(0.3)  # widen the window two unserialised syncs would share
        try:
            return await real(wf, target)
        finally:
            calls[index] = (wf.name, calls[index][1], time.monotonic())

    monkeypatch.setattr(deploy, "deploy", spy)
    return calls


async def pending_row(engine: AsyncEngine, name: str) -> int:
    wf = Workflow.model_validate({"name": name, "jobs": [
        {"name": "a", "runtime": "bash", "script": "true"}]})
    async with sessionmaker(engine)() as session:
        row = await workflows.store(session, wf, None)
        assert row.sync_status == "pending" and row.id is not None
        return row.id


async def sync_from(engine: AsyncEngine, row_id: int, target: PrefectTarget) -> WorkflowRow:
    async with sessionmaker(engine)() as session:
        row = await session.get(WorkflowRow, row_id)
        assert row is not None
        return await sync.sync_row(session, row, target, unless_synced=True)


async def test_two_replicas_deploy_a_pending_row_once(
        replicas: tuple[list[AsyncEngine], PrefectTarget, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    (one, two), target, _ = replicas
    calls = counting(monkeypatch)
    row_id = await pending_row(one, "replica-once")
    done = await asyncio.gather(sync_from(one, row_id, target), sync_from(two, row_id, target))
    assert [r.sync_status for r in done] == ["synced", "synced"], [r.sync_error for r in done]
    assert [name for name, *_ in calls] == ["replica-once"]  # the second found it synced


async def test_the_newest_definition_is_what_ends_up_deployed(
        replicas: tuple[list[AsyncEngine], PrefectTarget, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Replica one syncs while replica two replaces the document: the sync that holds the lock
    last deploys what is stored then, never the older copy it had read before waiting."""
    (one, two), target, _ = replicas
    calls = counting(monkeypatch)
    row_id = await pending_row(one, "replica-newest")
    async with sessionmaker(one)() as session:
        stale = await session.get(WorkflowRow, row_id)
        assert stale is not None
        async with sync.replica_lock(session, "replica-newest"):  # a sync of another replica
            newer = Workflow.model_validate({"name": "replica-newest", "jobs": [
                {"name": "renamed", "runtime": "bash", "script": "true"}]})
            async with sessionmaker(two)() as other:
                current = await other.get(WorkflowRow, row_id)
                await workflows.store(other, newer, current)
            waiting = asyncio.ensure_future(sync.sync_row(session, stale, target))
            await asyncio.sleep(2)
            assert not waiting.done() and not calls  # held by the other replica's lock
        synced = await waiting
    assert synced.sync_status == "synced", synced.sync_error
    assert len(calls) == 1
    assert '"renamed"' in synced.spec


async def test_a_replica_that_dies_holding_the_lock_releases_it(
        replicas: tuple[list[AsyncEngine], PrefectTarget, str],
        postgres_server: PostgresServer, monkeypatch: pytest.MonkeyPatch) -> None:
    (one, _), target, url = replicas
    calls = counting(monkeypatch)
    row_id = await pending_row(one, "replica-dies")
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    dying = await psycopg.AsyncConnection.connect(dsn, autocommit=True)
    await dying.execute("SELECT pg_advisory_lock(%s)", (sync.lock_key("replica-dies"),))
    waiting = asyncio.ensure_future(sync_from(one, row_id, target))
    await asyncio.sleep(2)
    assert not waiting.done() and not calls
    # The replica's process dies: its connection goes, and PostgreSQL drops its locks.
    backend = dying.info.backend_pid
    async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (backend,))
    row = await asyncio.wait_for(waiting, 60)
    assert row.sync_status == "synced", row.sync_error
    assert [name for name, *_ in calls] == ["replica-dies"]
    await dying.close()


async def test_different_workflows_sync_side_by_side(
        replicas: tuple[list[AsyncEngine], PrefectTarget, str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    (one, two), target, _ = replicas
    calls = counting(monkeypatch)
    first, second = await pending_row(one, "replica-x"), await pending_row(one, "replica-y")
    await asyncio.gather(sync_from(one, first, target), sync_from(two, second, target))
    spans = sorted((start, end) for _, start, end in calls)
    assert len(spans) == 2 and spans[1][0] < spans[0][1]  # overlapped: a lock per workflow
