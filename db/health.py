"""Whether our database can do its job: reachable, writable and at the code's schema."""

from __future__ import annotations

from functools import cache

import sqlalchemy as sa
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

from db.errors import describe_database_error
from db.migrate import alembic_config


@cache
def schema_head() -> str | None:
    """The newest migration this code has (what `python -m db.migrate` brings a database to)."""
    return ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()


def database_problem(engine: Engine) -> str | None:
    """What is wrong with the database for our API and flows, or None.

    A read is not enough: a read-only SQLite file, or a PostgreSQL standby, answers SELECT 1
    and fails every write; an empty or old database answers and lacks our tables. So the
    schema revision is compared and a write that changes nothing is tried and rolled back.
    """
    try:
        with engine.connect() as conn:
            try:
                revision = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
            except sa.exc.DBAPIError:
                return f"not migrated (no schema, this code needs {schema_head()})"
            conn.rollback()
            with conn.begin() as probe:
                # A write that changes nothing, rolled back: fails on a read-only file, mount
                # or connection and on a PostgreSQL standby, all of which answer reads.
                conn.execute(sa.text("UPDATE alembic_version SET version_num = version_num"))
                probe.rollback()
    except sa.exc.SQLAlchemyError as exc:
        return describe_database_error(exc)
    except Exception as exc:  # e.g. DatabaseMissing: say which kind
        return f"{type(exc).__name__}: {exc}"
    head = schema_head()
    if revision != head:
        return f"not migrated (schema {revision}, this code needs {head}): run python -m db.migrate"
    return None
