"""/sync: bring Prefect in line with every stored workflow now (what `flowforge sync` calls)."""

from __future__ import annotations

from fastapi import APIRouter

from api import crud
from api.deps import SessionDep, TargetDep
from api.schemas import SyncItem, SyncReport

router = APIRouter(tags=["sync"])


@router.post("/sync", response_model=SyncReport)
async def sync_now(session: SessionDep, target: TargetDep) -> SyncReport:
    rows = await crud.sync_all(session, target)
    return SyncReport(workflows=[
        SyncItem(name=r.name, status="deleted" if r.deleted else r.sync_status, error=r.sync_error)
        for r in rows
    ])
