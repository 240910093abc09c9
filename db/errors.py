"""Database errors described without their data, in one place."""

from __future__ import annotations

from sqlalchemy import exc as sa_exc


def describe_database_error(exc: sa_exc.SQLAlchemyError) -> str:
    """The driver's first line ("UNIQUE constraint failed: t.k", "duplicate key value violates
    unique constraint ..."): SQLAlchemy's message adds the statement and its parameters, and
    PostgreSQL's next lines (DETAIL) the row's values, which are record data."""
    if isinstance(exc, sa_exc.DBAPIError) and exc.orig is not None:
        lines = str(exc.orig).strip().splitlines()
        return f"database error: {type(exc.orig).__name__}" + (f": {lines[0]}" if lines else "")
    return f"database error: {type(exc).__name__}"
