"""A scratch PostgreSQL database for tests and benchmarks: created, yielded, dropped."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import sqlalchemy as sa

from db.engine import create_db_engine
from db.migrate import upgrade


class PostgresUnreachable(RuntimeError):
    """The admin URL's server did not answer (or refused us), so no database was created."""


@contextmanager
def scratch_postgres(
    admin_url: str, prefix: str = "sp_scratch_", migrate: bool = True
) -> Iterator[str]:
    """A new database `<prefix><random>` on `admin_url`'s server, migrated unless told not to,
    as a psycopg URL; dropped on exit even while connections to it remain open."""
    admin = create_db_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    name = f"{prefix}{uuid.uuid4().hex[:10]}"
    try:
        try:
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        except sa.exc.OperationalError as exc:
            raise PostgresUnreachable(f"PostgreSQL not reachable at {admin_url}: {exc}") from exc
        try:
            url = sa.make_url(admin.url).set(database=name).render_as_string(hide_password=False)
            if migrate:
                upgrade(url)
            yield url
        finally:
            with admin.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()
