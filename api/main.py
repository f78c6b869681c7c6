"""The FlowForge API: a thin FastAPI service over the definitions database and Prefect.

At start-up it migrates the database and syncs every workflow to Prefect in the background
(so the next start brings Prefect in line after it was down); while running it retries the
workflows still out of sync every `sync_interval` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api import crud, errors
from api.db import make_engine, migrate, sessionmaker
from api.deliveries import Dispatcher
from api.routes import concurrency_limits, events, health, hooks, runs, sync, triggers, workflows
from api.routes import secrets as secrets_routes
from api.routes import servers as servers_routes
from api.routes import variables as variables_routes
from flowforge import __version__
from flowforge.prefect_sync import DeployTarget
from flowforge.settings import Settings, get_settings

log = logging.getLogger("flowforge.api")


async def _sync_loop(app: FastAPI, interval: float) -> None:
    first = True
    while True:
        try:
            async with app.state.sessionmaker() as session:
                await crud.sync_all(session, app.state.target, only_unsynced=not first)
            first = False
        except Exception:
            log.exception("background sync failed")
        await asyncio.sleep(interval)


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate, settings.db_url)
        engine = make_engine(settings.db_url)
        app.state.settings = settings
        app.state.sessionmaker = sessionmaker(engine)
        app.state.target = DeployTarget(
            api_url=settings.prefect_url(), project_dir=settings.project,
            work_pool=settings.work_pool, timeout=settings.prefect_timeout,
            deadline=settings.prefect_deadline)
        app.state.dispatcher = Dispatcher(app.state.sessionmaker, app.state.target, settings)
        tasks = [asyncio.create_task(_sync_loop(app, settings.sync_interval)),
                 asyncio.create_task(app.state.dispatcher.loop(1.0))]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await app.state.dispatcher.close()
            await engine.dispose()

    app = FastAPI(
        title="FlowForge",
        version=__version__,
        description="Workflows defined as data, compiled to Prefect flows. "
                    "Errors are `{\"error\": {\"code\", \"message\", \"details\"}}`.",
        lifespan=lifespan,
    )
    errors.install(app)
    for router in (health.router, workflows.router, runs.router, sync.router,
                   triggers.router, hooks.router, events.router,
                   variables_routes.router, secrets_routes.router, servers_routes.router,
                   concurrency_limits.router):
        app.include_router(router)
    return app


app = create_app()
