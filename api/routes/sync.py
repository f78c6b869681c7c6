"""/sync: bring Prefect in line with every stored workflow now (what `flowforge sync` calls)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import Editor, Reader, SessionDep, TargetDep
from api.schemas.triggers import DriftItem, DriftReport
from api.schemas.workflows import SyncItem, SyncReport
from api.services import sync

router = APIRouter(tags=["sync"])


@router.post("/sync", response_model=SyncReport)
async def sync_now(session: SessionDep, target: TargetDep, who: Editor) -> SyncReport:
    rows = await sync.sync_all(session, target, namespaces=who.namespaces)
    return SyncReport(workflows=[
        SyncItem(name=r.name, status="deleted" if r.deleted else r.sync_status, error=r.sync_error)
        for r in rows
    ])


@router.get("/sync/check", response_model=DriftReport)
async def sync_check(session: SessionDep, target: TargetDep, who: Reader) -> DriftReport:
    """What differs between FlowForge and Prefect (`flowforge sync --check`); changes nothing.

    Drift is anything a person changed or removed in Prefect by hand: a deployment, a schedule,
    an automation; `POST /sync` puts it back.
    """
    found = await sync.drift_all(session, target, namespaces=who.namespaces)
    return DriftReport(in_sync=not any(found.values()),
                       workflows=[DriftItem(name=n, drift=d) for n, d in sorted(found.items())])
