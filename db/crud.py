"""Reads and writes of the domain tables; routes and flows call these, never inline queries."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from itertools import islice
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, func, select

from db.models import ApiRecord, RunOutcome, RunOutcomeBase

# Rows per statement: large enough to amortise round trips, small enough to keep the
# statement and its parameters well under driver limits.
BATCH_ROWS = 5_000


def _chunks(rows: Sequence[Mapping[str, Any]], size: int) -> Iterable[list[Mapping[str, Any]]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def upsert_rows(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    key_columns: Sequence[str] = (),
) -> int:
    """Insert `rows` set-based; with `key_columns`, a row whose key exists updates it instead.

    One INSERT ... ON CONFLICT per batch, so a retried store never writes a row twice.
    Returns the number of rows written.
    """
    if not rows:
        return 0
    stmt: sa.Insert
    if key_columns:
        # Within one statement a key may appear once only (PostgreSQL refuses otherwise):
        # the last occurrence wins, as it would have in sequential upserts.
        rows = list({tuple(r[k] for k in key_columns): r for r in rows}.values())
        dialect_insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(
            conn.dialect.name
        )
        if dialect_insert is None:
            raise NotImplementedError(f"upsert is not supported on {conn.dialect.name}")
        ins: Any = dialect_insert(table)
        updated = [c for c in rows[0] if c not in key_columns and c in table.c]
        stmt = (
            ins.on_conflict_do_update(
                index_elements=list(key_columns),
                set_={c: ins.excluded[c] for c in updated},
            )
            if updated
            else ins.on_conflict_do_nothing(index_elements=list(key_columns))
        )
    else:
        stmt = sa.insert(table)
    for chunk in _chunks(rows, BATCH_ROWS):
        conn.execute(stmt, chunk)
    return len(rows)


def upsert_api_records(conn: Connection, rows: Sequence[Mapping[str, Any]]) -> int:
    """Store extracted records in `api_records`, one row per (schedule, key)."""
    table = ApiRecord.__table__  # type: ignore[attr-defined]
    return upsert_rows(conn, table, rows, key_columns=("schedule", "key"))


def list_api_records(
    session: Session, *, schedule: str | None = None, limit: int = 100, offset: int = 0
) -> tuple[Sequence[ApiRecord], int]:
    """A page of records, newest first, and the total count for the filter."""
    query = select(ApiRecord)
    count_query = select(func.count()).select_from(ApiRecord)
    if schedule is not None:
        query = query.where(ApiRecord.schedule == schedule)
        count_query = count_query.where(ApiRecord.schedule == schedule)
    query = query.order_by(col(ApiRecord.fetched_at).desc(), col(ApiRecord.id).desc())
    rows = session.exec(query.offset(offset).limit(limit)).all()
    return rows, session.exec(count_query).one()


def save_run_outcome(conn: Connection, outcome: RunOutcomeBase) -> None:
    """Record what a flow run did; a retry of the same run overwrites its earlier outcome."""
    table = RunOutcome.__table__  # type: ignore[attr-defined]
    row = outcome.model_dump()
    row["metadata"] = row.pop("meta")
    upsert_rows(conn, table, [row], key_columns=("flow_run_id",))


def get_run_outcome(session: Session, flow_run_id: uuid.UUID) -> RunOutcome | None:
    return session.exec(select(RunOutcome).where(RunOutcome.flow_run_id == flow_run_id)).first()


def get_run_outcomes(
    session: Session, flow_run_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, RunOutcome]:
    """Outcomes of the given runs, by flow run id (runs without one are absent)."""
    ids = list(flow_run_ids)
    if not ids:
        return {}
    rows = session.exec(select(RunOutcome).where(col(RunOutcome.flow_run_id).in_(ids))).all()
    return {row.flow_run_id: row for row in rows}


def reflect_table(conn: Connection, name: str) -> sa.Table | None:
    """The table `name` as the database has it, or None when it does not exist."""
    if not sa.inspect(conn).has_table(name):
        return None
    return sa.Table(name, sa.MetaData(), autoload_with=conn)


def outcome_totals(session: Session, schedule: str) -> dict[str, int]:
    """Items processed / succeeded / failed over every recorded run of a schedule."""
    row = session.exec(
        select(
            func.coalesce(func.sum(RunOutcome.items_processed), 0),
            func.coalesce(func.sum(RunOutcome.items_succeeded), 0),
            func.coalesce(func.sum(RunOutcome.items_failed), 0),
        ).where(RunOutcome.schedule == schedule)
    ).one()
    return {
        "items_processed": int(row[0]),
        "items_succeeded": int(row[1]),
        "items_failed": int(row[2]),
    }
