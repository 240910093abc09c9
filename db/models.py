"""Domain tables: what our pipelines produce that Prefect does not keep."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

# JSON everywhere, JSONB on PostgreSQL (indexable, compact).
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timestamps stored in UTC and always read back aware (SQLite keeps no offset)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is not None and dialect.name == "sqlite":
            return value.astimezone(UTC).replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: sa.Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


def _aware(**kwargs: Any) -> Any:
    return Field(sa_type=UTCDateTime, **kwargs)


class ApiRecordBase(SQLModel):
    schedule: str = Field(max_length=200, index=True)
    key: str = Field(max_length=500)
    flow_run_id: uuid.UUID
    data: dict[str, Any] = Field(sa_type=JSONType)
    fetched_at: datetime = _aware(default_factory=utcnow)


class ApiRecord(ApiRecordBase, table=True):
    """One extracted record of an api_call schedule; a re-run with the same key updates it."""

    __tablename__ = "api_records"
    __table_args__ = (sa.UniqueConstraint("schedule", "key", name="uq_api_records_schedule_key"),)

    id: int | None = Field(default=None, primary_key=True)


class ApiRecordPublic(ApiRecordBase):
    pass


class RunOutcomeBase(SQLModel):
    flow_run_id: uuid.UUID = Field(unique=True)
    schedule: str = Field(max_length=200, index=True)
    pipeline: str = Field(max_length=50)
    items_processed: int = 0
    items_succeeded: int = 0
    items_failed: int = 0
    error: str | None = Field(default=None, sa_type=sa.Text)
    # `metadata` is reserved on declarative classes, hence the attribute name.
    meta: dict[str, Any] = Field(
        default_factory=dict, sa_column_kwargs={"name": "metadata"}, sa_type=JSONType
    )
    started_at: datetime | None = _aware(default=None)
    finished_at: datetime = _aware(default_factory=utcnow)


class RunOutcome(RunOutcomeBase, table=True):
    """What one flow run did, in item counts: written once per run, overwritten by its retries."""

    __tablename__ = "run_outcomes"

    id: int | None = Field(default=None, primary_key=True)


class UserBase(SQLModel):
    uid: str = Field(max_length=255, unique=True)
    context: str | None = Field(default=None, sa_type=sa.Text)
    goal: str | None = Field(default=None, sa_type=sa.Text)


class User(UserBase, table=True):
    """A user whose context and goal the crew pipeline sends (the crew scheduler's users)."""

    __tablename__ = "users"

    id: int | None = Field(default=None, primary_key=True)
    updated_at: datetime = _aware(default_factory=utcnow)


class CrewResponseBase(SQLModel):
    # No foreign key to users.uid (the crew scheduler's own schema has one): users may live in
    # another database.
    user_uid: str = Field(max_length=255, index=True)
    request_context: str | None = Field(default=None, sa_type=sa.Text)
    request_goal: str | None = Field(default=None, sa_type=sa.Text)
    response_data: Any | None = Field(default=None, sa_type=JSONType)
    created_at: datetime = _aware(default_factory=utcnow, index=True)
    flow_run_id: uuid.UUID
    status: str = Field(max_length=20)  # succeeded | failed
    error: str | None = Field(default=None, sa_type=sa.Text)


class CrewResponse(CrewResponseBase, table=True):
    """One user's crew API answer (or failure) in one flow run: the crew scheduler's row + run."""

    __tablename__ = "crew_responses"
    __table_args__ = (
        sa.UniqueConstraint("flow_run_id", "user_uid", name="uq_crew_responses_run_user"),
        sa.Index("ix_crew_responses_user_uid_created_at", "user_uid", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
