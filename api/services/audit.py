"""The audit log: one append-only row per change, whoever made it, never a secret in it.

What a row holds is chosen here, not taken from the request: the route's name, the path
(never the query or the body), the key's id and name or the trigger, the status. A run that a
trigger started without the API (a schedule, a dependency, an event) is recorded by
`record_trigger_runs`, which reads new runs from Prefect.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlmodel import col, select
from sqlmodel.ext.asyncio.session import AsyncSession

from api.auth import Principal
from api.schemas.access import AuditEntry
from api.tables import AuditRow

MAX_PAGE = 500


async def record(maker: async_sessionmaker[AsyncSession], *, actor: str, actor_name: str | None,
                 action: str, target: str | None, namespace: str | None, outcome: int,
                 request_id: str | None = None, client: str | None = None,
                 event_key: str | None = None) -> bool:
    """Append one row; False when `event_key` was recorded before (nothing is written)."""
    async with maker() as session:
        session.add(AuditRow(actor=actor[:150], actor_name=actor_name, action=action[:100],
                             target=None if target is None else target[:300],
                             namespace=namespace, outcome=outcome, request_id=request_id,
                             client=client, event_key=event_key))
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            return False
    return True


def actor_of(principal: Principal | None, path: str) -> tuple[str, str | None]:
    if principal is not None:
        return principal.key_id, principal.name
    if path.startswith("/hooks/"):
        return f"trigger:{path.removeprefix('/hooks/').strip('/')}", None
    return "-", None  # unauthenticated


async def query(session: AsyncSession, who: Principal, *, actor: str | None = None,
                action: str | None = None, target: str | None = None,
                namespace: str | None = None, since: datetime | None = None,
                limit: int = 100, offset: int = 0) -> list[AuditEntry]:
    q = select(AuditRow)
    for column, value in ((AuditRow.actor, actor), (AuditRow.action, action),
                          (AuditRow.target, target), (AuditRow.namespace, namespace)):
        if value is not None:
            q = q.where(col(column) == value)
    if since is not None:
        # As an instant in UTC, as the rows are stored: SQLite keeps a datetime as text without
        # its offset, so `since` at 16:00+02:00 compared as written would mean 16:00 UTC. A
        # time given without an offset is UTC.
        since = since.astimezone(UTC) if since.tzinfo else since.replace(tzinfo=UTC)
        q = q.where(col(AuditRow.at) >= since)
    if not who.every_namespace:  # an admin of some namespaces sees only what happened there
        q = q.where(col(AuditRow.namespace).in_(sorted(who.namespaces)))
    rows = (await session.exec(q.order_by(col(AuditRow.id).desc())
                               .offset(offset).limit(min(limit, MAX_PAGE)))).all()
    return [AuditEntry.model_validate(r, from_attributes=True) for r in rows]


def run_audit_fields(run: Any, namespace: str | None) -> dict[str, Any]:
    trigger = dict((run.parameters or {}).get("flowforge_trigger") or {})
    return {"actor": f"trigger:{trigger.get('id')}", "actor_name": trigger.get("name"),
            "action": f"run.start.{trigger.get('type')}", "target": f"run:{run.id}",
            "namespace": namespace, "outcome": 201, "event_key": f"run-start:{run.id}"}


__all__ = ["MAX_PAGE", "actor_of", "query", "record", "run_audit_fields"]
