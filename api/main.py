"""The FlowForge API: a thin FastAPI service over the definitions database and Prefect.

Routes (`api/routes`) parse the request and call services (`api/services`), which validate
with the core, store in the tables and drive Prefect through the control plane. At start-up
the app migrates the database and syncs every workflow to Prefect in the background (so the
next start brings Prefect in line after it was down); while running it retries the workflows
still out of sync every `sync_interval` seconds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.openapi.utils import get_openapi

from api import errors, security
from api.db import make_engine, migrate, sessionmaker
from api.middleware import Audit, Authenticate, BodyLimit, RequestId, is_public
from api.ratelimit import RateLimits
from api.routes import (
    api_keys,
    audit,
    concurrency_limits,
    events,
    health,
    hooks,
    namespaces,
    runs,
    secrets,
    servers,
    sync,
    triggers,
    variables,
    workflows,
)
from api.services import keys
from api.services import sync as sync_service
from api.services.crash_repair import repair_loop
from api.services.deliveries import Dispatcher
from api.services.trigger_audit import audit_trigger_runs
from api.settings import ApiSettings, get_settings
from flowforge import __version__
from flowforge.core.workflow import Workflow

log = logging.getLogger("flowforge.api")
ROUTERS = (health, workflows, runs, sync, triggers, hooks, events, variables, secrets, servers,
           concurrency_limits, api_keys, namespaces, audit)


async def _sync_loop(app: FastAPI, interval: float) -> None:
    first = True
    while True:
        try:
            async with app.state.sessionmaker() as session:
                await sync_service.sync_all(session, app.state.target, only_unsynced=not first)
            first = False
        except Exception:
            log.exception("background sync failed")
        await asyncio.sleep(interval)


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, plus the workflow document's schema: the routes read the body
    themselves (JSON or YAML), so FastAPI does not know the model the body must match."""
    if app.openapi_schema is None:
        schema = get_openapi(title=app.title, version=app.version,
                             description=app.description, routes=app.routes)
        document = Workflow.model_json_schema(ref_template="#/components/schemas/{model}")
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.update(document.pop("$defs", {}))
        components["WorkflowDocument"] = document
        # Every operation needs a key but the public ones (liveness, signed webhooks).
        schema["components"]["securitySchemes"] = {
            "APIKey": {"type": "http", "scheme": "bearer", "bearerFormat": "ffk_...",
                       "description": "an API key; the first admin's is $FLOWFORGE_HOME/admin.key"}}
        schema["security"] = [{"APIKey": []}]
        for path, operations in schema.get("paths", {}).items():
            for method, operation in operations.items():
                if is_public(path) or (method, path) == ("get", "/healthz"):
                    operation["security"] = []
        app.openapi_schema = schema
    return app.openapi_schema


def create_app(settings: ApiSettings | None = None) -> FastAPI:
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(migrate, settings.db_url)
        engine = make_engine(settings.db_url)
        app.state.settings = settings
        app.state.sessionmaker = sessionmaker(engine)
        app.state.key_reader = keys.KeyReader(app.state.sessionmaker, settings.db_url)
        app.state.target = settings.target()
        app.state.limits = RateLimits(settings.rate_limit_runs, settings.rate_limit_hooks,
                                      settings.rate_limit_auth, settings.redis_url)
        async with app.state.sessionmaker() as session:
            created = await keys.ensure_admin_key(session, settings.home)
        if created is not None:
            log.warning("created the first admin API key: %s (mode 0600)", created)
        app.state.dispatcher = Dispatcher(app.state.sessionmaker, app.state.target, settings)
        tasks = [asyncio.create_task(_sync_loop(app, settings.sync_interval)),
                 asyncio.create_task(app.state.dispatcher.loop(1.0)),
                 asyncio.create_task(audit_trigger_runs(app.state.sessionmaker,
                                                        app.state.target, 5.0)),
                 asyncio.create_task(repair_loop(app.state.sessionmaker, app.state.target,
                                                 settings.ui_url(), 5.0))]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await app.state.dispatcher.close()
            app.state.key_reader.close()
            await engine.dispose()

    app = FastAPI(
        title="FlowForge",
        version=__version__,
        description="Workflows defined as data, compiled to Prefect flows. "
                    "Errors are `{\"error\": {\"code\", \"message\", \"details\"}}`.",
        lifespan=lifespan,
    )
    errors.install(app)
    for module in ROUTERS:
        app.include_router(module.router)
    # Added innermost first: a request meets its id, the audit, the body limit, then the key;
    # the audit sits outside the limit so a refused body is recorded with its 413.
    app.add_middleware(Authenticate, authenticate=security.authenticate,
                       on_error=security.auth_error)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(Audit, record=security.record)
    app.add_middleware(RequestId)
    if settings.cors_origins:  # off unless an operator lists origins
        app.add_middleware(CORSMiddleware, allow_origins=settings.cors_origins,
                           allow_methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Idempotency-Key"])
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


app = create_app()
