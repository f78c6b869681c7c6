"""`Annotated` dependency aliases shared by the routers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth import Allow, Permission, Principal
from api.ratelimit import RateLimits
from api.settings import ApiSettings
from flowforge.controlplane.client import PrefectTarget


async def _session(request: Request) -> AsyncIterator[AsyncSession]:
    async with request.app.state.sessionmaker() as session:
        yield session


def _settings(request: Request) -> ApiSettings:
    settings: ApiSettings = request.app.state.settings
    return settings


def _target(request: Request) -> PrefectTarget:
    target: PrefectTarget = request.app.state.target
    return target


SessionDep = Annotated[AsyncSession, Depends(_session)]
SettingsDep = Annotated[ApiSettings, Depends(_settings)]
TargetDep = Annotated[PrefectTarget, Depends(_target)]

# Who may call a route: each route names exactly one of these (or `Allow(...)` itself) among
# its parameters or dependencies; `tests/unit/test_access.py` checks that every route does.
Reader = Annotated[Principal, Depends(Allow(Permission.READ))]
Runner = Annotated[Principal, Depends(Allow(Permission.RUN))]
Editor = Annotated[Principal, Depends(Allow(Permission.DEFINE))]
Admin = Annotated[Principal, Depends(Allow(Permission.ADMIN))]
#: Admin of every namespace: for what belongs to no namespace (concurrency limits).
GlobalAdmin = Annotated[Principal, Depends(Allow(Permission.ADMIN, every_namespace=True))]


def public() -> None:
    """The dependency of a route anyone may call (liveness, signed webhooks): says so."""


Public = Depends(public)


def _limits(request: Request) -> RateLimits:
    limits: RateLimits = request.app.state.limits
    return limits


LimitsDep = Annotated[RateLimits, Depends(_limits)]
