"""/healthz: 200 once the API, its database, the Prefect server and a worker are all up."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from sqlalchemy import text

from api.deps import Public, SessionDep, TargetDep
from api.errors import error_response
from flowforge.controlplane import store
from flowforge.controlplane.client import prefect_client

router = APIRouter(tags=["health"])


@router.get("/healthz", dependencies=[Public])
async def healthz(session: SessionDep, target: TargetDep) -> JSONResponse:
    checks: dict[str, Any] = {"api": "ok"}
    try:
        await session.exec(text("SELECT 1"))  # type: ignore[call-overload]
        checks["database"] = "ok"
    except Exception as exc:
        checks["database"] = f"error: {exc}"
    try:
        async with prefect_client(target) as client:
            checks.update(await store.health(client, target.work_pool))
    except Exception as exc:
        checks.setdefault("prefect", f"error: {exc}")
        checks.setdefault("worker", "unknown")
    if all(v == "ok" for v in checks.values()):
        return JSONResponse({"status": "ok", "checks": checks})
    return error_response(503, "unhealthy", "not every part is up", checks)
