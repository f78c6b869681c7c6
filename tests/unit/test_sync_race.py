"""The background sync loop against a request that is still deploying the same workflow.

The loop reads the rows that are not synced; a POST stores its row as `pending` and then
deploys it. When the loop's read fell inside that deploy, it used to deploy the row a second
time once the request let go of the lock, seconds later, undoing whatever had been changed in
Prefect in between (seen in CI as a deleted schedule coming back). Prefect's part is replaced by
a recorder here: what is tested is FlowForge's own ordering, which a real server only shows by
chance; the real round trip is `tests/integration/test_triggers.py`'s sync-check test.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.db import make_engine, migrate, sessionmaker
from api.services import sync as sync_service
from api.services import workflows as crud
from api.tables import WorkflowRow
from flowforge.controlplane import deploy as prefect_sync
from flowforge.controlplane.client import PrefectTarget
from flowforge.core.workflow import Workflow

Maker = async_sessionmaker[AsyncSession]
TARGET = PrefectTarget(api_url="http://127.0.0.1:9/api", project_dir=Path("."), work_pool="none",
                      timeout=1)


@pytest.fixture
async def maker(tmp_path: Path) -> AsyncIterator[Maker]:
    url = f"sqlite:///{tmp_path / 'ff.db'}"
    await asyncio.to_thread(migrate, url)
    engine = make_engine(url)
    yield sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
def deploys(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []

    async def slow_deploy(wf: Workflow, target: PrefectTarget) -> uuid.UUID:
        calls.append(wf.name)
        await asyncio.sleep(0.3)  # the window in which the loop reads the pending row
        return uuid.uuid4()

    monkeypatch.setattr(prefect_sync, "deploy", slow_deploy)
    return calls


def workflow(name: str) -> Workflow:
    return Workflow.model_validate(
        {"name": name, "jobs": [{"name": "a", "runtime": "bash", "script": "true"}]})


async def test_loop_does_not_redeploy_a_row_a_request_synced_meanwhile(
        maker: Maker, deploys: list[str]) -> None:
    stored = asyncio.Event()

    async def request() -> None:
        async with maker() as session:
            row = await crud.store(session, workflow("w"), None)
            stored.set()
            await sync_service.sync_row(session, row, TARGET)

    async def loop_pass() -> list[str]:
        await stored.wait()
        async with maker() as session:
            rows = await sync_service.sync_all(session, TARGET, only_unsynced=True)
            return [r.sync_status for r in rows]

    _, seen = await asyncio.gather(request(), loop_pass())
    assert deploys == ["w"]  # once, by the request; the loop found it synced
    assert seen == ["synced"]


async def test_loop_still_syncs_a_row_nobody_else_is_syncing(
        maker: Maker, deploys: list[str]) -> None:
    async with maker() as session:
        await crud.store(session, workflow("w"), None)
    async with maker() as session:
        rows = await sync_service.sync_all(session, TARGET, only_unsynced=True)
    assert deploys == ["w"] and [r.sync_status for r in rows] == ["synced"]


async def test_full_pass_redeploys_synced_rows(maker: Maker, deploys: list[str]) -> None:
    """The first pass after start-up (and `POST /sync`) repairs drift: it deploys every row."""
    async with maker() as session:
        row = await crud.store(session, workflow("w"), None)
        await sync_service.sync_row(session, row, TARGET)
    async with maker() as session:
        await sync_service.sync_all(session, TARGET)
    assert deploys == ["w", "w"]


async def test_loop_skips_a_row_purged_meanwhile(
        maker: Maker, deploys: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    async def gone(name: str, target: PrefectTarget) -> bool:
        return True

    monkeypatch.setattr(prefect_sync, "undeploy", gone)
    async with maker() as session:
        await crud.store(session, workflow("w"), None)
    async with maker() as loop_session:
        (stale,) = (await loop_session.exec(select(WorkflowRow))).all()
        async with maker() as session:
            row = await crud.get_row(session, "w")
            row.deleted = True
            session.add(row)
            await session.commit()
            await sync_service.sync_row(session, row, TARGET)  # purges it
        done = await sync_service.sync_row(loop_session, stale, TARGET, unless_synced=True)
    assert done is stale and deploys == []
