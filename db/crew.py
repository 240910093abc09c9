"""Reads and writes of the crew pipeline's tables: users and crew_responses."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, func, select

from db.crud import upsert_rows
from db.models import CrewResponse, User, utcnow

USER_COLUMNS = ("uid", "context", "goal")


@dataclass(frozen=True)
class UserTable:
    """Where the crew pipeline reads users: our `users` table or another database's table."""

    engine: Engine
    table: sa.Table


def users_table() -> sa.Table:
    return User.__table__  # type: ignore[attr-defined]


def crew_responses_table() -> sa.Table:
    return CrewResponse.__table__  # type: ignore[attr-defined]


def upsert_users(conn: Connection, users: Sequence[Mapping[str, Any]]) -> int:
    """Create or update users by uid (context, goal, updated_at), set-based."""
    now = utcnow()
    rows = [
        {"uid": u["uid"], "context": u.get("context"), "goal": u.get("goal"), "updated_at": now}
        for u in users
    ]
    return upsert_rows(conn, users_table(), rows, key_columns=("uid",))


def _has_text(column: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    return sa.and_(column.is_not(None), func.trim(column) != "")


def eligible(table: sa.Table) -> sa.ColumnElement[bool]:
    """Users with a context or a goal (what the crew scheduler sends)."""
    return sa.or_(_has_text(table.c.context), _has_text(table.c.goal))


def user_source_table(conn: Connection, name: str) -> sa.Table:
    """The users table `name` of a database, checked for the uid, context and goal columns."""
    if not sa.inspect(conn).has_table(name):
        raise LookupError(f"users table {name!r} does not exist")
    table = sa.Table(name, sa.MetaData(), autoload_with=conn)
    missing = [c for c in USER_COLUMNS if c not in table.c]
    if missing:
        raise LookupError(f"users table {name!r} lacks column(s) {', '.join(missing)}")
    return table


def count_eligible_users(conn: Connection, table: sa.Table) -> int:
    return int(conn.execute(sa.select(func.count()).where(eligible(table))).scalar_one())


def load_user_page(
    conn: Connection, table: sa.Table, after: str | None, limit: int
) -> list[tuple[str, str | None, str | None]]:
    """The next `limit` eligible users by uid after `after` (keyset paging: no offset scans)."""
    query = sa.select(table.c.uid, table.c.context, table.c.goal).where(eligible(table))
    if after is not None:
        query = query.where(table.c.uid > after)
    rows = conn.execute(query.order_by(table.c.uid).limit(limit)).all()
    return [(str(uid), context, goal) for uid, context, goal in rows]


def succeeded_uids(conn: Connection, flow_run_id: uuid.UUID, uids: Iterable[str]) -> set[str]:
    """Which of `uids` already have a succeeded row from this flow run (a retry skips them)."""
    table = crew_responses_table()
    wanted = list(uids)
    if not wanted:
        return set()
    query = sa.select(table.c.user_uid).where(
        table.c.flow_run_id == flow_run_id,
        table.c.status == "succeeded",
        table.c.user_uid.in_(wanted),
    )
    return {row[0] for row in conn.execute(query)}


def upsert_crew_responses(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Store a batch; a row of the same (flow run, user) is replaced, never added twice."""
    return upsert_rows(conn, crew_responses_table(), rows, key_columns=("flow_run_id", "user_uid"))


def list_crew_responses(
    session: Session,
    *,
    user_uid: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = 100,
    offset: int = 0,
) -> tuple[Sequence[CrewResponse], int]:
    """A page of responses, newest first, and how many match the filter."""
    conditions = []
    if user_uid is not None:
        conditions.append(col(CrewResponse.user_uid) == user_uid)
    if start is not None:
        conditions.append(col(CrewResponse.created_at) >= start)
    if end is not None:
        conditions.append(col(CrewResponse.created_at) <= end)
    query = (
        select(CrewResponse)
        .where(*conditions)
        .order_by(col(CrewResponse.created_at).desc(), col(CrewResponse.id).desc())
        .offset(offset)
        .limit(limit)
    )
    total = session.exec(select(func.count()).select_from(CrewResponse).where(*conditions)).one()
    return session.exec(query).all(), total


def get_crew_response(session: Session, response_id: int) -> CrewResponse | None:
    return session.get(CrewResponse, response_id)


def delete_crew_response(session: Session, response_id: int) -> bool:
    """Delete one response; False when there was none."""
    row = session.get(CrewResponse, response_id)
    if row is None:
        return False
    session.delete(row)
    return True
