"""Reads and writes of the domain tables; routes and flows call these, never inline queries."""

from __future__ import annotations

import json
import operator
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from itertools import islice, repeat
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlmodel import Session, col, func, select

from db.models import ApiRecord, RunOutcome, RunOutcomeBase

# Rows per statement: large enough to amortise round trips, small enough to keep the
# statement and its parameters well under driver limits.
BATCH_ROWS = 5_000
# From this many rows on, PostgreSQL upserts go through COPY into a staging table.
COPY_MIN_ROWS = 1_000


def _chunks(rows: Sequence[Mapping[str, Any]], size: int) -> Iterable[list[Mapping[str, Any]]]:
    it = iter(rows)
    while chunk := list(islice(it, size)):
        yield chunk


def _bind_column(process: Callable[[Any], Any] | None, values: list[Any]) -> Iterable[Any]:
    """`values` converted for the driver; one object shared by every row is converted once."""
    if process is None:
        return values
    first = values[0]
    if all(map(operator.is_, values, repeat(first))):
        return repeat(process(first), len(values))
    return map(process, values)


def _executemany(conn: Connection, stmt: sa.Insert, rows: Sequence[Mapping[str, Any]]) -> None:
    """Run `stmt` for every row with the driver's executemany, converting values column by column.

    Same SQL and type conversions as `conn.execute(stmt, rows)`, without SQLAlchemy's
    per-row parameter processing, which costs as much as the driver's own work.
    """
    dialect = conn.dialect
    compiled = stmt.compile(dialect=dialect, column_keys=list(rows[0]), for_executemany=True)
    names = list(compiled.positiontup or compiled.binds)
    if compiled.insert_prefetch or not names:
        # Python-side column defaults (or no values at all): let SQLAlchemy fill in each row.
        for chunk in _chunks(rows, BATCH_ROWS):
            conn.execute(stmt, chunk)
        return
    processors = [
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    ]
    escaped = [compiled.escaped_bind_names.get(name, name) for name in names]
    for chunk in _chunks(rows, BATCH_ROWS):
        try:
            columns = [
                _bind_column(process, [row[name] for row in chunk])
                for name, process in zip(names, processors, strict=True)
            ]
            params = (
                list(zip(*columns, strict=True))
                if compiled.positional
                else [dict(zip(escaped, vals, strict=True)) for vals in zip(*columns, strict=True)]
            )
        except Exception:
            # A row lacks a column or holds a value its type refuses: SQLAlchemy says which.
            conn.execute(stmt, chunk)
            continue
        conn.exec_driver_sql(compiled.string, params)


def _copy_upsert(
    conn: Connection, table: sa.Table, rows: Sequence[Mapping[str, Any]], conflict: str
) -> None:
    """PostgreSQL: COPY the rows into a temporary table, then one INSERT ... SELECT.

    COPY is PostgreSQL's bulk path (about 3x executemany here); the INSERT ... SELECT keeps
    the upsert set-based and atomic within the caller's transaction.
    """
    quote = conn.dialect.identifier_preparer.quote
    columns = [c for c in rows[0] if c in table.c]
    as_json = [isinstance(table.c[c].type, sa.JSON) for c in columns]
    names = ", ".join(quote(c) for c in columns)
    stage = quote(f"_stage_{uuid.uuid4().hex[:12]}")
    conn.exec_driver_sql(
        f"CREATE TEMP TABLE {stage} ON COMMIT DROP AS "
        f"SELECT {names} FROM {quote(table.name)} WITH NO DATA"
    )
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    with cursor, cursor.copy(f"COPY {stage} ({names}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(
                [
                    json.dumps(row.get(c)) if j else row.get(c)
                    for c, j in zip(columns, as_json, strict=True)
                ]
            )
    conn.exec_driver_sql(
        f"INSERT INTO {quote(table.name)} ({names}) SELECT {names} FROM {stage} {conflict}"
    )
    conn.exec_driver_sql(f"DROP TABLE {stage}")


def upsert_rows(
    conn: Connection,
    table: sa.Table,
    rows: Sequence[Mapping[str, Any]],
    key_columns: Sequence[str] = (),
    update: Sequence[str] | None = None,
) -> int:
    """Insert `rows` set-based; with `key_columns`, a row whose key exists updates it instead
    (its `update` columns; default: every other column given; none: the row is left as is).

    One INSERT ... ON CONFLICT executemany per batch, so a retried store never writes a row twice.
    Returns the number of rows written.
    """
    if not rows:
        return 0
    stmt: sa.Insert
    if key_columns:
        # Within one statement a key may appear once only (PostgreSQL refuses otherwise):
        # the last occurrence wins, as it would have in sequential upserts.
        key_of = operator.itemgetter(*key_columns)
        rows = list({key_of(r): r for r in rows}.values())
        dialect_insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}.get(
            conn.dialect.name
        )
        if dialect_insert is None:
            raise NotImplementedError(f"upsert is not supported on {conn.dialect.name}")
        ins: Any = dialect_insert(table)
        updated = (
            [c for c in rows[0] if c not in key_columns and c in table.c]
            if update is None
            else list(update)
        )
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
    if conn.dialect.name == "postgresql" and len(rows) >= COPY_MIN_ROWS:
        _copy_upsert(conn, table, rows, _conflict_clause(conn, stmt))
    else:
        _executemany(conn, stmt, rows)
    return len(rows)


def _conflict_clause(conn: Connection, stmt: sa.Insert) -> str:
    """The `ON CONFLICT ...` tail of a compiled upsert ('' for a plain insert)."""
    sql = str(stmt.compile(dialect=conn.dialect))
    return sql[sql.index(" ON CONFLICT") :] if " ON CONFLICT" in sql else ""


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


def item_totals_by_schedule(session: Session) -> list[tuple[str, str, int, int]]:
    """(schedule, pipeline, items processed, items failed) over every recorded run."""
    rows = session.exec(
        select(
            col(RunOutcome.schedule),
            col(RunOutcome.pipeline),
            func.coalesce(func.sum(RunOutcome.items_processed), 0),
            func.coalesce(func.sum(RunOutcome.items_failed), 0),
        ).group_by(col(RunOutcome.schedule), col(RunOutcome.pipeline))
    ).all()
    return [(schedule, pipeline, int(done), int(bad)) for schedule, pipeline, done, bad in rows]


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
