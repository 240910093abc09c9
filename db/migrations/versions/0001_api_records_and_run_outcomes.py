"""api_records and run_outcomes

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "api_records",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("schedule", sa.String(length=200), nullable=False),
        sa.Column("key", sa.String(length=500), nullable=False),
        sa.Column("flow_run_id", sa.Uuid(), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("fetched_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("schedule", "key", name="uq_api_records_schedule_key"),
    )
    op.create_index("ix_api_records_schedule", "api_records", ["schedule"])

    op.create_table(
        "run_outcomes",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("flow_run_id", sa.Uuid(), nullable=False, unique=True),
        sa.Column("schedule", sa.String(length=200), nullable=False),
        sa.Column("pipeline", sa.String(length=50), nullable=False),
        sa.Column("items_processed", sa.Integer(), nullable=False),
        sa.Column("items_succeeded", sa.Integer(), nullable=False),
        sa.Column("items_failed", sa.Integer(), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_run_outcomes_schedule", "run_outcomes", ["schedule"])


def downgrade() -> None:
    op.drop_index("ix_run_outcomes_schedule", table_name="run_outcomes")
    op.drop_table("run_outcomes")
    op.drop_index("ix_api_records_schedule", table_name="api_records")
    op.drop_table("api_records")
