"""Reads and writes of the newsletter's tables: sources, subscribers, issues and the ledger.

The ledger (`deliveries`) is what keeps a retried run from mailing anyone twice: one row per
issue and address, created once (a retry's insert skips the rows that exist), claimed by the
attempt a few rows at a time just before their messages go out (`sending`), and marked `sent`
after the server's 250 or `failed` with its answer. A row still `sending` when the next attempt
starts belongs to an attempt that died mid-send: the server may have its message, so it is
settled as failed (unconfirmed) and never sent again (at most once, as Ghost does with a
batch it was submitting). How many rows that can be is bounded by what the sender reads
ahead (flows/newsletter_delivery.py).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, func, select

from db.crud import upsert_rows
from db.models import (
    Delivery,
    Newsletter,
    NewsletterItem,
    NewsletterSource,
    Subscriber,
    utcnow,
)

DELIVERY_STATUSES = ("queued", "sending", "sent", "failed")


def _table(model: Any) -> sa.Table:
    table: sa.Table = model.__table__
    return table


# -- sources ----------------------------------------------------------------------------------


def replace_sources(
    conn: Connection, workspace_id: str, sources: Sequence[Mapping[str, Any]]
) -> int:
    """The workspace's source list becomes `sources`, in their order (one transaction)."""
    table = _table(NewsletterSource)
    conn.execute(sa.delete(table).where(table.c.workspace_id == workspace_id))
    now = utcnow()
    rows = [
        {
            "workspace_id": workspace_id,
            "position": i,
            "type": s["type"],
            "config": dict(s),
            "created_at": now,
        }
        for i, s in enumerate(sources)
    ]
    if rows:
        conn.execute(sa.insert(table), rows)
    return len(rows)


def list_sources(session: Session, workspace_id: str) -> list[dict[str, Any]]:
    """The workspace's sources as they were given, in order."""
    rows = session.exec(
        select(NewsletterSource)
        .where(NewsletterSource.workspace_id == workspace_id)
        .order_by(col(NewsletterSource.position))
    ).all()
    return [dict(row.config) for row in rows]


# -- subscribers ------------------------------------------------------------------------------


def upsert_subscribers(
    conn: Connection, workspace_id: str, subscribers: Sequence[Mapping[str, Any]]
) -> int:
    """Create or update subscribers by address (name, status), set-based."""
    now = utcnow()
    rows = [
        {
            "workspace_id": workspace_id,
            "email": s["email"].lower(),
            "name": s.get("name"),
            "status": s.get("status", "active"),
            "token": uuid.uuid4().hex,
            "created_at": now,
            "updated_at": now,
        }
        for s in subscribers
    ]
    # created_at and the unsubscribe token are a subscriber's for good: never updated.
    return upsert_rows(
        conn,
        _table(Subscriber),
        rows,
        key_columns=("workspace_id", "email"),
        update=("name", "status", "updated_at"),
    )


def list_subscribers(
    session: Session,
    workspace_id: str,
    *,
    status: str | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[Sequence[Subscriber], int]:
    """A page of the workspace's subscribers by address, and the total for the filter."""
    where = [Subscriber.workspace_id == workspace_id]
    if status is not None:
        where.append(Subscriber.status == status)
    query = select(Subscriber).where(*where).order_by(col(Subscriber.email))
    total = session.exec(select(func.count()).select_from(Subscriber).where(*where)).one()
    return session.exec(query.offset(offset).limit(limit)).all(), total


# -- issues -----------------------------------------------------------------------------------


def get_newsletter_of_run(session: Session, flow_run_id: uuid.UUID) -> Newsletter | None:
    """The issue a flow run made (an earlier attempt of it, when retried), or None."""
    return session.exec(select(Newsletter).where(Newsletter.flow_run_id == flow_run_id)).first()


def latest_newsletter_of_job(session: Session, job_id: uuid.UUID | None) -> Newsletter | None:
    """The job's newest issue (what a run with `send` alone sends), or None."""
    if job_id is None:
        return None
    return session.exec(
        select(Newsletter)
        .where(col(Newsletter.job_id) == job_id)
        .order_by(col(Newsletter.created_at).desc(), col(Newsletter.id).desc())
    ).first()


def save_newsletter(
    conn: Connection, newsletter: Mapping[str, Any], items: Sequence[Mapping[str, Any]]
) -> int:
    """Store an issue and its items; the issue's id. One issue per flow run: a second save by
    the same run (a retried task) answers the first one's id and changes nothing."""
    table = _table(Newsletter)
    found = conn.execute(
        sa.select(table.c.id).where(table.c.flow_run_id == newsletter["flow_run_id"])
    ).scalar()
    if found is not None:
        return int(found)
    inserted = conn.execute(
        sa.insert(table)
        .values(**newsletter, items_used=len(items), created_at=utcnow())
        .returning(table.c.id)
    ).scalar_one()
    newsletter_id = int(inserted)
    if items:
        rows = [
            {**item, "newsletter_id": newsletter_id, "position": i} for i, item in enumerate(items)
        ]
        conn.execute(sa.insert(_table(NewsletterItem)), rows)
    return newsletter_id


def newsletter_items(session: Session, newsletter_id: int) -> Sequence[NewsletterItem]:
    return session.exec(
        select(NewsletterItem)
        .where(NewsletterItem.newsletter_id == newsletter_id)
        .order_by(col(NewsletterItem.position))
    ).all()


def get_newsletter(session: Session, newsletter_id: int) -> Newsletter | None:
    return session.get(Newsletter, newsletter_id)


def list_newsletters(
    session: Session,
    *,
    workspace_ids: Iterable[str] | None,
    job_id: uuid.UUID | None = None,
    limit: int = 50,
    offset: int = 0,
) -> tuple[Sequence[Newsletter], int]:
    """A page of issues, newest first (`workspace_ids` None: every workspace)."""
    where: list[sa.ColumnElement[bool]] = []
    if workspace_ids is not None:
        where.append(col(Newsletter.workspace_id).in_(list(workspace_ids)))
    if job_id is not None:
        where.append(col(Newsletter.job_id) == job_id)
    query = (
        select(Newsletter)
        .where(*where)
        .order_by(col(Newsletter.created_at).desc(), col(Newsletter.id).desc())
    )
    total = session.exec(select(func.count()).select_from(Newsletter).where(*where)).one()
    return session.exec(query.offset(offset).limit(limit)).all(), total


# -- the ledger -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipient:
    """An address a delivery row is for."""

    email: str
    name: str | None = None
    subscriber_id: int | None = None


def active_recipients(conn: Connection, workspace_id: str) -> list[Recipient]:
    """The workspace's active subscribers, by address."""
    table = _table(Subscriber)
    query = (
        sa.select(table.c.id, table.c.email, table.c.name)
        .where(table.c.workspace_id == workspace_id, table.c.status == "active")
        .order_by(table.c.email)
    )
    return [Recipient(email, name, sid) for sid, email, name in conn.execute(query)]


def queue_deliveries(conn: Connection, newsletter_id: int, recipients: Sequence[Recipient]) -> int:
    """A queued ledger row per recipient not yet in the ledger of this issue (a retry adds
    only newcomers); the number of rows the issue's ledger has."""
    now = utcnow()
    rows = [
        {
            "newsletter_id": newsletter_id,
            "subscriber_id": r.subscriber_id,
            "email": r.email.lower(),
            "name": r.name,
            "status": "queued",
            "attempts": 0,
            "updated_at": now,
        }
        for r in recipients
    ]
    table = _table(Delivery)
    upsert_rows(conn, table, rows, key_columns=("newsletter_id", "email"), update=())
    count = sa.select(func.count()).select_from(table).where(table.c.newsletter_id == newsletter_id)
    return int(conn.execute(count).scalar_one())


@dataclass(frozen=True)
class Claimed:
    """A ledger row this attempt may send, with its subscriber's unsubscribe token."""

    id: int
    email: str
    name: str | None
    token: str | None


UNCONFIRMED = (
    "unconfirmed: an earlier attempt of this run stopped while this message was being sent, "
    "so the server may have it; not sent again, so that no one is mailed twice"
)


def settle_unconfirmed(conn: Connection, newsletter_id: int) -> int:
    """Rows an earlier attempt claimed and never settled (it died mid-send): failed as
    unconfirmed, never sent again. How many there were."""
    table = _table(Delivery)
    result = conn.execute(
        sa.update(table)
        .where(table.c.newsletter_id == newsletter_id, table.c.status == "sending")
        .values(status="failed", error=UNCONFIRMED, updated_at=utcnow())
    )
    return int(result.rowcount)


def unsent_deliveries(conn: Connection, newsletter_id: int) -> list[Claimed]:
    """The issue's queued rows, with their subscribers' unsubscribe tokens, by id."""
    table = _table(Delivery)
    subscribers = _table(Subscriber)
    query = (
        sa.select(table.c.id, table.c.email, table.c.name, subscribers.c.token)
        .select_from(table.outerjoin(subscribers, table.c.subscriber_id == subscribers.c.id))
        .where(table.c.newsletter_id == newsletter_id, table.c.status == "queued")
        .order_by(table.c.id)
    )
    return [Claimed(i, e, n, t) for i, e, n, t in conn.execute(query)]


def claim_deliveries(conn: Connection, claim: str, ids: Sequence[int]) -> set[int]:
    """Claim these queued rows for attempt `claim` (just before their messages go out); the
    ids claimed (a row another attempt took, or settled, is not)."""
    if not ids:
        return set()
    table = _table(Delivery)
    result = conn.execute(
        sa.update(table)
        .where(table.c.id.in_(list(ids)), table.c.status == "queued")
        .values(status="sending", claim=claim, updated_at=utcnow())
        .returning(table.c.id)
    )
    return {int(i) for i in result.scalars()}


def release_claim(conn: Connection, claim: str) -> int:
    """Rows attempt `claim` took and the sender never handed to the server: queued again."""
    table = _table(Delivery)
    result = conn.execute(
        sa.update(table)
        .where(table.c.claim == claim, table.c.status == "sending")
        .values(status="queued", claim=None, updated_at=utcnow())
    )
    return int(result.rowcount)


def unsubscribe(conn: Connection, token: str) -> bool:
    """The subscriber with this unsubscribe token is unsubscribed; False for no such token."""
    table = _table(Subscriber)
    result = conn.execute(
        sa.update(table)
        .where(table.c.token == token)
        .values(status="unsubscribed", updated_at=utcnow())
    )
    return bool(result.rowcount)


@dataclass(frozen=True)
class Mark:
    """What the SMTP server answered for one ledger row."""

    id: int
    status: str  # sent | failed
    code: int | None
    answer: str
    attempts: int
    at: datetime


def mark_deliveries(conn: Connection, claim: str, marks: Sequence[Mark]) -> int:
    """Record the server's answers, set-based; only rows this attempt still holds change."""
    if not marks:
        return 0
    table = _table(Delivery)
    stmt = (
        sa.update(table)
        .where(
            table.c.id == sa.bindparam("b_id"),
            table.c.claim == claim,
            table.c.status == "sending",
        )
        .values(
            status=sa.bindparam("b_status"),
            smtp_code=sa.bindparam("b_code"),
            error=sa.bindparam("b_error"),
            attempts=table.c.attempts + sa.bindparam("b_attempts"),
            sent_at=sa.bindparam("b_sent_at"),
            updated_at=sa.bindparam("b_at"),
        )
    )
    rows = [
        {
            "b_id": m.id,
            "b_status": m.status,
            "b_code": m.code,
            "b_error": None if m.status == "sent" else m.answer,
            "b_attempts": m.attempts,
            "b_sent_at": m.at if m.status == "sent" else None,
            "b_at": m.at,
        }
        for m in marks
    ]
    conn.execute(stmt, rows)
    return len(rows)


def delivery_counts(conn: Connection, newsletter_id: int) -> dict[str, int]:
    """Ledger rows of an issue by status (every status present, 0 when none)."""
    table = _table(Delivery)
    query = (
        sa.select(table.c.status, func.count())
        .where(table.c.newsletter_id == newsletter_id)
        .group_by(table.c.status)
    )
    counts = dict.fromkeys(DELIVERY_STATUSES, 0)
    counts.update({status: int(n) for status, n in conn.execute(query)})
    return counts


def list_deliveries(
    session: Session, newsletter_id: int, *, limit: int = 1000, offset: int = 0
) -> Sequence[Delivery]:
    return session.exec(
        select(Delivery)
        .where(Delivery.newsletter_id == newsletter_id)
        .order_by(col(Delivery.id))
        .offset(offset)
        .limit(limit)
    ).all()


def failed_deliveries(
    conn: Connection, newsletter_id: int, limit: int = 20
) -> list[dict[str, Any]]:
    """A few failed rows of an issue with the server's answer (for the run's result)."""
    table = _table(Delivery)
    query = (
        sa.select(table.c.email, table.c.smtp_code, table.c.error)
        .where(table.c.newsletter_id == newsletter_id, table.c.status == "failed")
        .order_by(table.c.id)
        .limit(limit)
    )
    return [{"email": e, "code": c, "error": err} for e, c, err in conn.execute(query)]
