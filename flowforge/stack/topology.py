"""What `flowforge up` starts, by count and port: the shape of the stack, checked before any of it.

One machine by default: a Prefect server with its services, one worker, one API. The options
of the scale-out set-up (docs/scale-out.md) make it Prefect's multi-server shape: PostgreSQL
for both databases, Redis for Prefect's messaging and the API's rate limits, N Prefect API
servers and one services process, N FlowForge APIs, N workers. Each part is also a command of
its own (`flowforge prefect-server`, `flowforge api`, `flowforge worker`) for other hosts.
"""

from __future__ import annotations

from dataclasses import dataclass

from flowforge.stack.children import SupervisorError
from flowforge.stack.settings import StackSettings


def _is_postgres(url: str | None) -> bool:
    return bool(url) and str(url).split("://", 1)[0].split("+", 1)[0] in ("postgresql", "postgres")


@dataclass(frozen=True)
class Topology:
    """Ports and counts of one `flowforge up`; `numbered` names the i-th of a kind (1-based)."""

    prefect_ports: tuple[int, ...]  # empty when an external Prefect server is used
    split_services: bool  # API servers without services, plus one services process
    api_ports: tuple[int, ...]
    workers: int

    @classmethod
    def of(cls, settings: StackSettings, external_prefect: bool) -> Topology:
        check(settings, external_prefect)
        servers = max(settings.prefect_api_replicas, 1)
        return cls(
            prefect_ports=() if external_prefect else tuple(
                settings.prefect_port + i for i in range(servers)),
            split_services=settings.prefect_api_replicas > 0,
            api_ports=tuple(settings.api_port + i for i in range(settings.api_replicas)),
            workers=settings.workers,
        )

    def prefect_url(self, index: int) -> str:
        """The Prefect API the `index`-th client (worker, API) talks to: spread round-robin."""
        port = self.prefect_ports[index % len(self.prefect_ports)]
        return f"http://127.0.0.1:{port}/api"


def numbered(kind: str, index: int) -> str:
    """`worker`, `worker-2`, ...: the first keeps the plain name (and its log file)."""
    return kind if index == 0 else f"{kind}-{index + 1}"


def check(settings: StackSettings, external_prefect: bool) -> None:
    """Refuse a shape that cannot work, naming the option at fault."""
    if settings.prefect_api_replicas:
        if external_prefect:
            raise SupervisorError("--prefect-api-replicas starts Prefect servers; it cannot be "
                                  "used with an external Prefect (PREFECT_API_URL)")
        if not _is_postgres(settings.prefect_database_url):
            raise SupervisorError(
                "--prefect-api-replicas needs --prefect-database-url postgresql://...: "
                "several Prefect servers cannot share SQLite")
        if not settings.redis_url:
            raise SupervisorError(
                "--prefect-api-replicas needs --redis-url redis://...: the API servers and "
                "the services process exchange events through Redis")
    if settings.api_replicas > 1 and not _is_postgres(settings.database_url):
        raise SupervisorError(
            "--api-replicas needs --database-url postgresql://...: the replicas share the "
            "definitions and sync them under a PostgreSQL lock")
    if settings.redis_url and not settings.redis_url.startswith(("redis://", "rediss://")):
        raise SupervisorError("--redis-url must be a redis:// or rediss:// URL")
    last_api = settings.api_port + settings.api_replicas - 1
    last_prefect = settings.prefect_port + max(settings.prefect_api_replicas, 1) - 1
    if not external_prefect and (settings.api_port <= last_prefect
                                 and settings.prefect_port <= last_api):
        raise SupervisorError(
            f"the API ports {settings.api_port}-{last_api} and the Prefect ports "
            f"{settings.prefect_port}-{last_prefect} overlap; move --api-port or --prefect-port")


__all__ = ["Topology", "check", "numbered"]
