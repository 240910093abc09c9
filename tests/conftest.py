"""Session-wide real parts: one Prefect test server, SQLite and PostgreSQL databases, a worker."""

from __future__ import annotations

import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="sp-tests-"))
# Before Prefect is imported: keep its state out of the home directory, and quiet.
os.environ.setdefault("PREFECT_HOME", str(_TMP / "prefect-home"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["DATABASE_URL"] = f"sqlite:///{_TMP / 'pipelines.db'}"

import pytest  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from db.engine import create_db_engine  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from settings import get_settings  # noqa: E402

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    return _TMP


@pytest.fixture(scope="session")
def prefect_api_url() -> Iterator[str]:
    """One temporary Prefect server for the whole session (never nested)."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield str(PREFECT_API_URL.value())


@pytest.fixture(scope="session")
def sqlite_engine() -> Iterator[Engine]:
    """The default database of this session (a SQLite file), migrated with Alembic."""
    url = get_settings().database_url
    upgrade(url)
    engine = create_db_engine(url)
    yield engine
    engine.dispose()


@pytest.fixture(scope="session")
def postgres_engine() -> Iterator[Engine]:
    """A fresh PostgreSQL database for the session; mandatory in CI, skipped elsewhere if down."""
    admin_url = os.environ.get("TEST_POSTGRES_URL", DEFAULT_PG)
    admin = create_db_engine(admin_url).execution_options(isolation_level="AUTOCOMMIT")
    name = f"sp_test_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL is required in CI and is not reachable at {admin_url}: {exc}")
        pytest.skip(f"PostgreSQL not reachable at {admin_url}")
    url = sa.make_url(admin.url).set(database=name).render_as_string(hide_password=False)
    upgrade(url)
    engine = create_db_engine(url)
    yield engine
    engine.dispose()
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Each storage test once on SQLite and once on PostgreSQL, on empty tables."""
    engine: Engine = request.getfixturevalue(f"{request.param}_engine")
    yield engine
    with engine.begin() as conn:
        for table in ("api_records", "run_outcomes"):
            conn.execute(sa.text(f"DELETE FROM {table}"))
