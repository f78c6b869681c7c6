"""webhook deliveries inbox

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("trigger_id", sa.String(length=36), nullable=False),
        sa.Column("delivery_id", sa.String(length=200), nullable=False),
        sa.Column("workflow", sa.String(length=63), nullable=False),
        sa.Column("parameters", sa.Text(), nullable=False),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("run_id", sa.String(length=36), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("trigger_id", "delivery_id"),
    )
    op.create_index("ix_webhook_deliveries_trigger_id", "webhook_deliveries", ["trigger_id"])
    op.create_index("ix_webhook_deliveries_run_id", "webhook_deliveries", ["run_id"])
    op.create_index("ix_webhook_deliveries_next_attempt_at", "webhook_deliveries",
                    ["next_attempt_at"])


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_next_attempt_at", "webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_run_id", "webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_trigger_id", "webhook_deliveries")
    op.drop_table("webhook_deliveries")
