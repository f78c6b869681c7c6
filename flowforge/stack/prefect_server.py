"""The Prefect server `flowforge up` starts: its database, its tuning, its health wait."""

from __future__ import annotations

import sys
from collections.abc import Callable

from flowforge.stack.children import Child, SupervisorError, base_env, wait_http_ok
from flowforge.stack.settings import StackSettings

PREFECT_HEALTH_TIMEOUT = 60.0
# Server-side tuning of the services that record task runs and events from the event stream
# (names as in prefect 3.8.8's prefect/settings/models/server/services.py): one row per
# write, the default, made a 1,000-task run readable 21-28 s after it ended; batches of 200
# flushed every second made it 3 s (docs/performance.md).
RECORDER_TUNING = {
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_READ_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL": "1",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_READ_BATCH_SIZE": "200",
    "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_FLUSH_INTERVAL": "1",
}
# Both servers keep SQLite connections on aiosqlite threads: their cyclic garbage collection runs
# off the event loop, or one "database is locked" can freeze the loop for the busy timeout
# (flowforge/offloop_gc.py, docs/architecture.md).
SERVE_OFF_LOOP_GC = [sys.executable, "-m", "flowforge.offloop_gc"]


def prefect_database_url(settings: StackSettings) -> str:
    """Prefect's server speaks asyncpg / aiosqlite; accept plain URLs and name the driver."""
    url = settings.prefect_database_url
    if not url:
        return f"sqlite+aiosqlite:///{settings.prefect_home / 'prefect.db'}"
    scheme, sep, rest = url.partition("://")
    base = scheme.split("+", 1)[0]
    if base in ("postgresql", "postgres"):
        return f"postgresql+asyncpg{sep}{rest}"
    if base == "sqlite":
        return f"sqlite+aiosqlite{sep}{rest}"
    return url


def redis_env(redis_url: str) -> dict[str, str]:
    """prefect-redis for everything Prefect keeps in memory by default, as Prefect's
    multi-server guide sets it: its event broker and cache (events between API servers and
    the services), causal ordering, concurrency leases, and the services' task queue."""
    return {
        "PREFECT_MESSAGING_BROKER": "prefect_redis.messaging",
        "PREFECT_MESSAGING_CACHE": "prefect_redis.messaging",
        "PREFECT_SERVER_EVENTS_CAUSAL_ORDERING": "prefect_redis.ordering",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect_redis.lease_storage",
        "PREFECT_REDIS_MESSAGING_URL": redis_url,
        "PREFECT_SERVER_DOCKET_URL": redis_url,
    }


def prefect_server_env(settings: StackSettings, auth: str | None = None,
                       port: int | None = None) -> dict[str, str]:
    """The server's env; `auth` (`user:password`) closes its API to requests without it."""
    port = port or settings.prefect_port
    home = settings.prefect_home
    env = base_env()
    env.pop("PREFECT_API_URL", None)  # the server must not think it is a client of another one
    env.update({
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": prefect_database_url(settings),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        **RECORDER_TUNING,
    })
    # Where browsers reach this server; an operator's own value (a load balancer) wins.
    env.setdefault("PREFECT_UI_API_URL", f"http://127.0.0.1:{port}/api")
    env.setdefault("PREFECT_UI_URL", f"http://127.0.0.1:{port}")
    if settings.redis_url:
        env.update(redis_env(settings.redis_url))
    if auth:
        env["PREFECT_SERVER_API_AUTH_STRING"] = auth
    return env


#: What a Prefect server child runs: everything, the API and UI alone, or the services alone.
ROLES = ("all", "api", "services")


def prefect_server_argv(role: str, port: int, host: str = "127.0.0.1") -> list[str]:
    if role == "services":
        return [*SERVE_OFF_LOOP_GC, "prefect", "server", "services", "start"]
    argv = [*SERVE_OFF_LOOP_GC, "prefect", "server", "start", "--host", host,
            "--port", str(port)]
    return [*argv, "--no-services"] if role == "api" else argv


def start_prefect_server(settings: StackSettings, *, timeout: float = PREFECT_HEALTH_TIMEOUT,
                         check: Callable[[], None] | None = None,
                         on_started: Callable[[Child], None] | None = None,
                         auth: str | None = None, port: int | None = None, role: str = "all",
                         name: str = "prefect-server") -> Child:
    """Start `prefect server start` on 127.0.0.1:<port> (default prefect_port) and wait for
    /api/health; with role "services", `prefect server services start` (no port to wait on).

    `on_started(child)` runs right after the process exists (before the wait). On any failure
    (child died, timeout, stop requested) the child is stopped before raising.
    """
    port = port or settings.prefect_port
    settings.prefect_home.mkdir(parents=True, exist_ok=True)
    child = Child(
        name=name,
        argv=prefect_server_argv(role, port),
        env=prefect_server_env(settings, auth, port),
        log_path=settings.home / "logs" / f"{name}.log",
    )
    child.start()
    if on_started is not None:
        on_started(child)
    if role != "services":
        _wait_child_http(child, f"http://127.0.0.1:{port}/api/health", timeout, check)
    return child


def _wait_child_http(child: Child, url: str, timeout: float, check: Callable[[], None] | None) -> float:
    def guard() -> None:
        if check is not None:
            check()
        if not child.running():
            raise SupervisorError(child.describe_exit())

    try:
        return wait_http_ok(url, timeout, check=guard)
    except TimeoutError as exc:
        child.stop()
        raise SupervisorError(f"{child.name} not healthy: {exc}\nlast lines of {child.log_path}:\n"
                              f"{child.log_tail()}") from exc
    except BaseException:
        child.stop()
        raise


__all__ = ["PREFECT_HEALTH_TIMEOUT", "RECORDER_TUNING", "ROLES", "SERVE_OFF_LOOP_GC",
           "prefect_database_url", "prefect_server_argv", "prefect_server_env", "redis_env",
           "start_prefect_server"]
