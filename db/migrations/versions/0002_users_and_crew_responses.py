"""users and crew_responses (the crew scheduler)

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("uid", sa.String(length=255), nullable=False, unique=True),
        sa.Column("context", sa.Text(), nullable=True),
        sa.Column("goal", sa.Text(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    # The crew scheduler's schema (id, user_uid, request_context, request_goal, response_data,
    # created_at and its three indexes) plus the run that wrote the row, its status and error.
    op.create_table(
        "crew_responses",
        sa.Column("id", sa.Integer(), primary_key=True),
        sa.Column("user_uid", sa.String(length=255), nullable=False),
        sa.Column("request_context", sa.Text(), nullable=True),
        sa.Column("request_goal", sa.Text(), nullable=True),
        sa.Column("response_data", JSON, nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("flow_run_id", sa.Uuid(), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("error", sa.Text(), nullable=True),
        sa.UniqueConstraint("flow_run_id", "user_uid", name="uq_crew_responses_run_user"),
    )
    op.create_index("ix_crew_responses_user_uid", "crew_responses", ["user_uid"])
    op.create_index("ix_crew_responses_created_at", "crew_responses", ["created_at"])
    op.create_index(
        "ix_crew_responses_user_uid_created_at", "crew_responses", ["user_uid", "created_at"]
    )


def downgrade() -> None:
    op.drop_table("crew_responses")
    op.drop_table("users")
