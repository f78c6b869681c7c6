"""/healthz: 200 once the API, its database, the Prefect server and a worker are all up."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from api.deps import Public, SessionDep, SettingsDep, TargetDep
from api.errors import UnhealthyError
from api.services import health

router = APIRouter(tags=["health"])


@router.get("/healthz", dependencies=[Public])
async def healthz(session: SessionDep, target: TargetDep,
                  settings: SettingsDep) -> dict[str, Any]:
    checks = await health.check(session, target, settings.health_timeout, settings.home)
    if not health.healthy(checks):
        raise UnhealthyError("not every part is up", checks)
    return {"status": "ok", "checks": checks}
