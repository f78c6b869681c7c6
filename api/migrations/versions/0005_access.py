"""access: API keys, the audit log, namespaces (workflows and servers belong to one; names
stay unique across namespaces, as deployment names are in Prefect), webhook secret rotation

Existing workflows and servers move into the `default` namespace.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("role", sa.String(length=16), nullable=False),
        sa.Column("namespaces", sa.Text(), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(length=36), nullable=True),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_api_keys_key_hash", "api_keys", ["key_hash"], unique=True)
    op.create_table(
        "audit_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(length=150), nullable=False),
        sa.Column("actor_name", sa.String(length=100), nullable=True),
        sa.Column("action", sa.String(length=100), nullable=False),
        sa.Column("target", sa.String(length=300), nullable=True),
        sa.Column("namespace", sa.String(length=63), nullable=True),
        sa.Column("outcome", sa.Integer(), nullable=False),
        sa.Column("request_id", sa.String(length=64), nullable=True),
        sa.Column("client", sa.String(length=100), nullable=True),
        sa.Column("event_key", sa.String(length=200), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("event_key"),
    )
    for column in ("at", "actor", "action", "target", "namespace"):
        op.create_index(f"ix_audit_log_{column}", "audit_log", [column])
    op.create_table(
        "namespaces",
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("isolation", sa.String(length=16), nullable=False),
        sa.Column("policy", sa.Text(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    with op.batch_alter_table("workflows") as batch:
        batch.add_column(sa.Column("namespace", sa.String(length=63), nullable=False,
                                   server_default="default"))
        batch.create_index("ix_workflows_namespace", ["namespace"])
    with op.batch_alter_table("servers") as batch:
        batch.add_column(sa.Column("namespace", sa.String(length=63), nullable=False,
                                   server_default="default"))
        batch.create_index("ix_servers_namespace", ["namespace"])
    with op.batch_alter_table("triggers") as batch:
        batch.add_column(sa.Column("previous_secret", sa.Text(), nullable=True))
        batch.add_column(sa.Column("previous_until", sa.DateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("triggers") as batch:
        batch.drop_column("previous_until")
        batch.drop_column("previous_secret")
    with op.batch_alter_table("servers") as batch:
        batch.drop_index("ix_servers_namespace")
        batch.drop_column("namespace")
    with op.batch_alter_table("workflows") as batch:
        batch.drop_index("ix_workflows_namespace")
        batch.drop_column("namespace")
    op.drop_table("namespaces")
    for column in ("at", "actor", "action", "target", "namespace"):
        op.drop_index(f"ix_audit_log_{column}", table_name="audit_log")
    op.drop_table("audit_log")
    op.drop_index("ix_api_keys_key_hash", table_name="api_keys")
    op.drop_table("api_keys")
