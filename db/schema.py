"""What an existing table looks like: does it fit the fields a pipeline stores into it."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from sqlalchemy.engine import Connection

# Our own bookkeeping tables: never a destination.
INTERNAL_TABLES = frozenset(
    {
        "run_outcomes",
        "alembic_version",
        "newsletter_sources",
        "subscribers",
        "newsletters",
        "newsletter_items",
        "deliveries",
    }
)

Part = Literal["table", "fields", "key_columns"]


@dataclass(frozen=True)
class TableProblem:
    """Why a table cannot take the rows: `part` says which of the caller's inputs is at fault."""

    part: Part
    message: str


def unique_column_sets(inspector: sa.Inspector, table: str) -> list[set[str]]:
    """The column sets of the table's primary key, unique constraints and unique indexes."""
    pk = inspector.get_pk_constraint(table).get("constrained_columns") or []
    sets = [set(pk)] if pk else []
    sets += [set(u["column_names"]) for u in inspector.get_unique_constraints(table)]
    sets += [set(i["column_names"]) for i in inspector.get_indexes(table) if i.get("unique")]  # type: ignore[arg-type]
    return sets


def table_problems(
    conn: Connection,
    table: str,
    fields: Collection[str] | None,
    key_columns: Sequence[str],
    *,
    ours: bool,
    where: str,
) -> list[TableProblem]:
    """Whether `table` exists and has every field and a unique key on exactly `key_columns`.

    `fields` None: only that it exists (a table whose rows we build ourselves). `ours`: the
    table is in our own database, where the internal tables are refused. `where` names the
    database in the messages.
    """
    inspector = sa.inspect(conn)
    if not inspector.has_table(table):
        return [TableProblem("table", f"table {table!r} does not exist in {where}")]
    if fields is None:
        return []
    if ours and table in INTERNAL_TABLES:
        return [TableProblem("table", f"{table!r} is internal, not a destination")]
    columns = {c["name"] for c in inspector.get_columns(table)}
    problems: list[TableProblem] = []
    if not fields:
        problems.append(TableProblem("fields", f"map the columns of {table!r} to expressions"))
    if missing := sorted(set(fields) - columns):
        problems.append(TableProblem("fields", f"columns not in {table!r}: {', '.join(missing)}"))
    if key_columns:
        if not_mapped := sorted(set(key_columns) - set(fields)):
            problems.append(
                TableProblem("key_columns", f"not among extract.fields: {', '.join(not_mapped)}")
            )
        elif set(key_columns) not in unique_column_sets(inspector, table):
            problems.append(
                TableProblem("key_columns", f"{table!r} has no unique key on exactly these columns")
            )
    return problems
