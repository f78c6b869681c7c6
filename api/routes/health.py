"""/healthz: 200 once the API, its database, the Prefect server and a worker are all up."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from prefect.client.schemas.objects import WorkerStatus
from sqlalchemy import text

from api.deps import SessionDep, TargetDep
from api.errors import error_response
from flowforge.prefect_sync import prefect_client

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz(session: SessionDep, target: TargetDep) -> JSONResponse:
    checks: dict[str, Any] = {"api": "ok"}
    try:
        await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {exc}"
    try:
        async with prefect_client(target) as client:
            response = await client._client.get("/health")
            checks["prefect"] = "ok" if response.status_code == 200 else f"status {response.status_code}"
            workers = await client.read_workers_for_work_pool(target.work_pool)
            online = [w.name for w in workers if w.status == WorkerStatus.ONLINE]
            checks["worker"] = "ok" if online else f"no online worker in pool '{target.work_pool}'"
    except Exception as exc:
        checks.setdefault("prefect", f"error: {exc}")
        checks.setdefault("worker", "unknown")
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ok", "checks": checks})
    return error_response(503, "unhealthy", "not every part is up", checks)
