"""Engines: one per database URL per process, with the settings we rely on."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from settings import get_settings, normalise_database_url


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets the API read while a flow writes; busy_timeout waits out short write locks
    # instead of failing when a few flow runs store at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


class DatabaseMissing(RuntimeError):
    """Our SQLite database file is not there: it is made by migrating, never by a connection."""


def create_db_engine(url: str, *, must_exist: bool = False) -> Engine:
    """An engine for `url` with the settings we rely on (SQLite: WAL, file folder created).

    Its errors never show a statement's parameters (`hide_parameters`): they are the records
    being stored, and errors end up in logs and in Prefect's run states. With `must_exist`
    (flows and our API: `get_engine`), a SQLite file must be there already and is opened
    read-write only, so a deleted or misplaced database fails loudly instead of coming back
    empty ("no such table" later); `python -m db.migrate` creates it.
    """
    url = normalise_database_url(url)
    parsed = sa.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        connect_args: dict[str, Any] = {"timeout": 30}
        if parsed.database and parsed.database != ":memory:":
            path = Path(parsed.database)
            if must_exist:
                if not path.is_file():
                    raise DatabaseMissing(
                        f"our database {path} does not exist: create it with "
                        "`python -m db.migrate` (make run does)"
                    )
                # SQLite opens (and creates) the file on each connection: never create it.
                url = f"sqlite:///file:{path.resolve()}?mode=rw&uri=true"
            else:
                path.parent.mkdir(parents=True, exist_ok=True)
        engine = sa.create_engine(url, connect_args=connect_args, hide_parameters=True)
        sa.event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return sa.create_engine(url, pool_pre_ping=True, hide_parameters=True)


@lru_cache(maxsize=16)
def get_engine(url: str | None = None) -> Engine:
    """The shared engine for `url` (default: the configured database), which must exist."""
    return create_db_engine(url or get_settings().database_url, must_exist=True)
