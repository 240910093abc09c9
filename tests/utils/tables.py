"""A scratch table created afresh for one test."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine


def fresh_table(engine: Engine, name: str, columns: str) -> None:
    """Drop table `name` if a previous test left it, and create it with `columns` (SQL)."""
    with engine.begin() as conn:
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE TABLE {name} ({columns})"))
