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


# -- the newsletter pipeline ------------------------------------------------------------------


class NewsletterSource(SQLModel, table=True):
    """One content source of a workspace (a feed, a subreddit, an HTML page), in list order."""

    __tablename__ = "newsletter_sources"
    __table_args__ = (
        sa.UniqueConstraint("workspace_id", "position", name="uq_newsletter_sources_position"),
    )

    id: int | None = Field(default=None, primary_key=True)
    workspace_id: str = Field(max_length=64, index=True)
    position: int
    type: str = Field(max_length=20)
    config: dict[str, Any] = Field(sa_type=JSONType)
    created_at: datetime = _aware(default_factory=utcnow)


class Subscriber(SQLModel, table=True):
    """A workspace's subscriber; the address is stored lower-cased, unique per workspace."""

    __tablename__ = "subscribers"
    __table_args__ = (
        sa.UniqueConstraint("workspace_id", "email", name="uq_subscribers_workspace_email"),
    )

    id: int | None = Field(default=None, primary_key=True)
    workspace_id: str = Field(max_length=64, index=True)
    email: str = Field(max_length=320)
    name: str | None = Field(default=None, max_length=200)
    status: str = Field(max_length=20)  # active | unsubscribed
    # The secret of the subscriber's one-click unsubscribe link (List-Unsubscribe).
    token: str = Field(max_length=64, unique=True, default_factory=lambda: uuid.uuid4().hex)
    created_at: datetime = _aware(default_factory=utcnow)
    updated_at: datetime = _aware(default_factory=utcnow)


class Newsletter(SQLModel, table=True):
    """One issue, made by one flow run (its retries reuse it): what was generated and sent."""

    __tablename__ = "newsletters"

    id: int | None = Field(default=None, primary_key=True)
    flow_run_id: uuid.UUID = Field(unique=True)
    job_id: uuid.UUID | None = Field(default=None, index=True)
    job_name: str = Field(max_length=200)
    workspace_id: str = Field(max_length=64, index=True)
    subject: str = Field(max_length=500)
    html: str = Field(sa_type=sa.Text)
    text: str = Field(sa_type=sa.Text)
    items_used: int = 0
    test_mode: bool = False
    created_at: datetime = _aware(default_factory=utcnow, index=True)


class NewsletterItem(SQLModel, table=True):
    """A scraped item an issue carries, in its order."""

    __tablename__ = "newsletter_items"
    __table_args__ = (
        sa.UniqueConstraint("newsletter_id", "position", name="uq_newsletter_items_position"),
    )

    id: int | None = Field(default=None, primary_key=True)
    newsletter_id: int = Field(foreign_key="newsletters.id", ondelete="CASCADE", index=True)
    position: int
    title: str = Field(sa_type=sa.Text)
    url: str = Field(sa_type=sa.Text)
    source: str = Field(max_length=20)
    source_label: str = Field(sa_type=sa.Text)
    published_at: datetime | None = _aware(default=None)
    summary: str = Field(default="", sa_type=sa.Text)
    author: str | None = Field(default=None, max_length=200)


class Delivery(SQLModel, table=True):
    """The ledger: one row per issue and recipient, claimed before sending, marked after the 250.

    status: queued -> sending (claimed by one attempt of the run) -> sent | failed.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        sa.UniqueConstraint("newsletter_id", "email", name="uq_deliveries_newsletter_email"),
        sa.Index("ix_deliveries_newsletter_status", "newsletter_id", "status"),
    )

    id: int | None = Field(default=None, primary_key=True)
    newsletter_id: int = Field(foreign_key="newsletters.id", ondelete="CASCADE")
    # None for a test recipient (an address in the job's config, not a subscriber).
    subscriber_id: int | None = Field(
        default=None, foreign_key="subscribers.id", ondelete="SET NULL"
    )
    email: str = Field(max_length=320)
    name: str | None = Field(default=None, max_length=200)
    status: str = Field(default="queued", max_length=20)
    claim: str | None = Field(default=None, max_length=64)
    attempts: int = 0
    smtp_code: int | None = None
    error: str | None = Field(default=None, sa_type=sa.Text)
    sent_at: datetime | None = _aware(default=None)
    updated_at: datetime = _aware(default_factory=utcnow)
