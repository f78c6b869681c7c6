"""SQLModel tables: the FlowForge database is the source of truth for definitions.

The whole document is stored as canonical JSON (`spec`) with its hash and a version that grows
on every change; jobs, dependencies and triggers are also stored as rows so they can be queried
(which workflows use a server, which depend on an upstream) without parsing every document.
Run history is not stored here: runs are Prefect flow runs.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlmodel import Field, SQLModel


def utcnow() -> datetime:
    return datetime.now(UTC)


class WorkflowRow(SQLModel, table=True):
    __tablename__ = "workflows"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=63)
    namespace: str = Field(default="default", index=True, max_length=63)
    description: str | None = None
    version: int = 1
    spec_hash: str = Field(max_length=64)
    spec: str = Field(sa_type=sa.Text)
    sync_status: str = Field(default="pending", max_length=16)  # synced | pending | error
    sync_error: str | None = Field(default=None, sa_type=sa.Text)
    deployment_id: str | None = Field(default=None, max_length=36)
    deleted: bool = False  # a tombstone until Prefect has forgotten the deployment too
    created_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))


class JobRow(SQLModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (sa.UniqueConstraint("workflow_id", "name"),)

    id: int | None = Field(default=None, primary_key=True)
    workflow_id: int = Field(foreign_key="workflows.id", index=True, ondelete="CASCADE")
    name: str = Field(max_length=100)
    type: str = Field(max_length=16)
    runtime: str | None = Field(default=None, max_length=16)
    position: int


class DependencyRow(SQLModel, table=True):
    __tablename__ = "dependencies"

    id: int | None = Field(default=None, primary_key=True)
    workflow_id: int = Field(foreign_key="workflows.id", index=True, ondelete="CASCADE")
    job: str = Field(max_length=100)
    upstream: str = Field(max_length=100)
    on: str = Field(default="success", max_length=16)


class TriggerRow(SQLModel, table=True):
    __tablename__ = "triggers"

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), primary_key=True, max_length=36)
    workflow_id: int = Field(foreign_key="workflows.id", index=True, ondelete="CASCADE")
    type: str = Field(max_length=16)
    name: str | None = Field(default=None, max_length=100)
    enabled: bool = True
    config: str = Field(sa_type=sa.Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))
    # Webhook triggers only: the HMAC key, Fernet-encrypted with the API's key (api/hook_keys.py).
    # Never part of `config`, the document or any response after the one that created it.
    secret: str | None = Field(default=None, sa_type=sa.Text)
    # The secret before the last rotation, still accepted until `previous_until`.
    previous_secret: str | None = Field(default=None, sa_type=sa.Text)
    previous_until: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))


class DeliveryRow(SQLModel, table=True):
    """A webhook delivery, stored before any Prefect call: the inbox that makes a burst or a
    Prefect outage lose nothing. `run_id` is set once its flow run exists."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (sa.UniqueConstraint("trigger_id", "delivery_id"),)

    id: int | None = Field(default=None, primary_key=True)
    trigger_id: str = Field(max_length=36, index=True)
    delivery_id: str = Field(max_length=200)
    workflow: str = Field(max_length=63)
    parameters: str = Field(sa_type=sa.Text)
    received_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))
    run_id: str | None = Field(default=None, max_length=36, index=True)
    attempts: int = 0
    last_error: str | None = Field(default=None, sa_type=sa.Text)
    # When the dispatcher should try (again); None once the run exists or it gave up.
    next_attempt_at: datetime | None = Field(default_factory=utcnow,
                                             sa_type=sa.DateTime(timezone=True), index=True)


class ServerRow(SQLModel, table=True):
    """An SSH server, for listing and for the in-use check; never holds the credential.

    What a worker connects with is the copy in Prefect (flowforge/runtime/ssh_servers.py),
    written in the same request; the host key pinned there under `accept-new` is read back
    from Prefect, not from this row.
    """

    __tablename__ = "servers"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True, unique=True, max_length=63)
    namespace: str = Field(default="default", index=True, max_length=63)
    host: str = Field(max_length=255)
    port: int = 22
    username: str = Field(max_length=64)
    tags: str = Field(default="[]", sa_type=sa.Text)  # JSON list
    created_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))


class ApiKeyRow(SQLModel, table=True):
    """An API key: only its SHA-256 is kept (keys are random, so a fast hash is enough, as
    for GitHub's tokens); `prefix` is what a listing shows to tell keys apart."""

    __tablename__ = "api_keys"

    id: str = Field(default_factory=lambda: str(uuid.uuid4()), primary_key=True, max_length=36)
    name: str = Field(max_length=100)
    role: str = Field(max_length=16)
    namespaces: str = Field(default='["*"]', sa_type=sa.Text)  # JSON list; "*" is every one
    key_hash: str = Field(index=True, unique=True, max_length=64)
    prefix: str = Field(max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))
    created_by: str | None = Field(default=None, max_length=36)
    expires_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))
    revoked_at: datetime | None = Field(default=None, sa_type=sa.DateTime(timezone=True))


class AuditRow(SQLModel, table=True):
    """One thing that changed something, by whom: append-only (nothing updates or deletes).

    `event_key` makes recording idempotent where the same event can be seen twice (a run a
    trigger started, seen by two API processes)."""

    __tablename__ = "audit_log"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True), index=True)
    actor: str = Field(max_length=150, index=True)  # key id, or trigger:<id>
    actor_name: str | None = Field(default=None, max_length=100)
    action: str = Field(max_length=100, index=True)
    target: str | None = Field(default=None, max_length=300, index=True)
    namespace: str | None = Field(default=None, max_length=63, index=True)
    outcome: int
    request_id: str | None = Field(default=None, max_length=64)
    client: str | None = Field(default=None, max_length=100)
    event_key: str | None = Field(default=None, max_length=200, unique=True)


class NamespaceRow(SQLModel, table=True):
    """An admin's settings for a namespace: its isolation and its admission policy."""

    __tablename__ = "namespaces"

    name: str = Field(primary_key=True, max_length=63)
    isolation: str = Field(default="none", max_length=16)  # none | container
    policy: str = Field(default="{}", sa_type=sa.Text)  # JSON, `schemas.namespaces.Policy`
    updated_at: datetime = Field(default_factory=utcnow, sa_type=sa.DateTime(timezone=True))


__all__ = ["ApiKeyRow", "AuditRow", "DeliveryRow", "DependencyRow", "JobRow", "NamespaceRow",
           "ServerRow", "TriggerRow", "WorkflowRow", "utcnow"]
