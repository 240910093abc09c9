"""Session-wide real parts: one Prefect test server, SQLite and PostgreSQL databases, a worker."""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_TMP = Path(tempfile.mkdtemp(prefix="sp-tests-"))
# Every temporary file of the session and of the processes it starts (pytest's tmp_path,
# Prefect's runner_storage, the worker's) lands in the session's folder, removed at the end.
(_TMP / "tmp").mkdir()
os.environ["TMPDIR"] = tempfile.tempdir = str(_TMP / "tmp")


def _remove_session_folder() -> None:
    """The session's folder (databases, Prefect's home, worker log) goes with the session;
    KEEP_TEST_FILES=1 keeps it to read the worker's log after a failure. Registered before
    Prefect's test harness registers its own clean-up (of a folder inside it): exit handlers
    run last-registered first, so this one runs after it."""
    if not os.environ.get("KEEP_TEST_FILES"):
        shutil.rmtree(_TMP, ignore_errors=True)


atexit.register(_remove_session_folder)
# Before Prefect is imported: keep its state out of the home directory, and quiet.
os.environ.setdefault("PREFECT_HOME", str(_TMP / "prefect-home"))
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["DATABASE_URL"] = f"sqlite:///{_TMP / 'pipelines.db'}"
os.environ["WORK_POOL_NAME"] = "test-pipelines"
os.environ["WORK_POOL_CONCURRENCY"] = "4"
# A run enqueued behind its deployment's concurrency limit asks again after this (30 s by
# default): the collision tests wait for one.
os.environ["PREFECT_SERVER_DEPLOYMENTS_CONCURRENCY_SLOT_WAIT_SECONDS"] = "2"
os.environ.pop("API_KEYS", None)

from tests.utils.services import (  # noqa: E402
    CREW_API_PORT,
    CREW_API_URL,
    EMAIL_SERVICE_URL,
    REDDIT_BASE_URL,
    SMTP_FROM,
    SMTP_PORT,
)

# The fake services' URLs; the worker and the flow processes inherit them.
os.environ["EMAIL_SERVICE_URL"] = EMAIL_SERVICE_URL
os.environ["CREW_API_URL"] = CREW_API_URL
os.environ["REDDIT_BASE_URL"] = REDDIT_BASE_URL
os.environ.update(
    SMTP_HOST="127.0.0.1", SMTP_PORT=str(SMTP_PORT), SMTP_FROM=SMTP_FROM, SMTP_SECURITY="none"
)
for _name in ("SMTP_USERNAME", "SMTP_PASSWORD", "WORKSPACE_KEYS"):
    os.environ.pop(_name, None)

import signal  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from sqlalchemy.engine import Engine  # noqa: E402

from db.engine import create_db_engine  # noqa: E402
from db.migrate import upgrade  # noqa: E402
from settings import PROJECT_DIR, get_settings  # noqa: E402
from tests.utils.fake_crew import FakeCrew, serve_fake_crew  # noqa: E402
from tests.utils.postgres import PostgresUnreachable, scratch_postgres  # noqa: E402
from tests.utils.prefect_cli import prefect_env  # noqa: E402

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Overload tests go last, so the burst they leave behind slows no other test; the fuzz
    after them, so the deployments it leaves behind are in no other test's lists."""
    items.sort(
        key=lambda item: (
            item.get_closest_marker("fuzz") is not None,
            item.get_closest_marker("overload") is not None,
        )
    )


@pytest.fixture(scope="session")
def tmp_root() -> Path:
    return _TMP


@pytest.fixture(scope="session")
def prefect_api_url() -> Iterator[str]:
    """One temporary Prefect server for the whole session (never nested), with our fixes."""
    from prefect.settings import PREFECT_API_URL
    from prefect.testing.utilities import prefect_test_harness

    with contextlib.ExitStack() as harness:
        # The server process starts inside the harness's __enter__ and inherits os.environ.
        with pytest.MonkeyPatch.context() as env:
            hooks = Path(__file__).parent / "prefect_server_hooks"
            paths = os.pathsep.join([str(hooks), str(PROJECT_DIR)])
            env.setenv("PYTHONPATH", paths, prepend=os.pathsep)
            env.setenv("SP_SERVER_FIXES_REPORT", str(_TMP / "server-fixes.json"))
            harness.enter_context(prefect_test_harness(server_startup_timeout=120))
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
    with contextlib.ExitStack() as stack:
        try:
            url = stack.enter_context(scratch_postgres(admin_url, prefix="sp_test_"))
        except PostgresUnreachable as exc:
            if os.environ.get("CI"):
                pytest.fail(f"PostgreSQL is required in CI: {exc}")
            pytest.skip(str(exc))
        engine = create_db_engine(url)
        yield engine
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgres"])
def any_engine(request: pytest.FixtureRequest) -> Iterator[Engine]:
    """Each storage test once on SQLite and once on PostgreSQL, on empty tables."""
    engine: Engine = request.getfixturevalue(f"{request.param}_engine")
    _empty_tables(engine)
    yield engine
    _empty_tables(engine)


def _empty_tables(engine: Engine) -> None:
    with engine.begin() as conn:
        for table in (
            "api_records",
            "run_outcomes",
            "crew_responses",
            "users",
            "deliveries",
            "newsletter_items",
            "newsletters",
            "subscribers",
            "newsletter_sources",
        ):
            conn.execute(sa.text(f"DELETE FROM {table}"))


@pytest.fixture(scope="session")
def work_pool(prefect_api_url: str) -> str:
    """The process work pool, with its concurrency limit, and the automation that ends runs
    whose worker died, as make run creates them."""
    from prefect import get_client
    from prefect.utilities.asyncutils import run_coro_as_sync

    from deployments.automations import ensure_automation, unresponsive_runs_automation
    from deployments.work_pool import ensure_work_pool

    async def create() -> None:
        async with get_client() as client:
            await ensure_work_pool(client)
            await ensure_automation(client, unresponsive_runs_automation())

    run_coro_as_sync(create())
    return get_settings().work_pool_name


@pytest.fixture(scope="session")
def worker(
    prefect_api_url: str, work_pool: str, sqlite_engine: Engine, tmp_root: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A real `prefect worker` polling the pool every second (flows write to the session DB)."""
    log = open(tmp_root / "worker.log", "wb")  # noqa: SIM115
    from deployments.stack import worker_command, worker_env

    proc = subprocess.Popen(
        worker_command(work_pool),
        env=worker_env(prefect_env(prefect_api_url, PREFECT_WORKER_QUERY_SECONDS="1")),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield proc
    # A Prefect worker ignores a single SIGTERM; SIGINT stops it cleanly.
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def warehouse(prefect_api_url: str, postgres_engine: Engine) -> Iterator[Engine]:
    """A `prices` table in another database (PostgreSQL), named by a Destination block."""
    with postgres_engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS prices"))
        conn.execute(sa.text("CREATE TABLE prices (symbol TEXT PRIMARY KEY, usd DOUBLE PRECISION)"))
    url = postgres_engine.url.render_as_string(hide_password=False)
    from blocks.destination import Destination

    Destination(url=url).save("warehouse", overwrite=True)
    yield postgres_engine
    with postgres_engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE prices"))


@pytest.fixture(scope="session")
def fake_crew() -> Iterator[FakeCrew]:
    """The fake crew API at CREW_API_URL (the worker's flows call it too)."""
    with serve_fake_crew(FakeCrew(), port=CREW_API_PORT) as crew:
        yield crew


@pytest.fixture
def crew(fake_crew: FakeCrew) -> FakeCrew:
    """The fake crew API, reset to answer every call at once, with no faults."""
    fake_crew.latency = fake_crew.fail_rate = fake_crew.timeout_rate = 0.0
    fake_crew.fail_first, fake_crew.hang_seconds = 0, 5.0
    fake_crew.hits.clear()
    fake_crew.bodies.clear()
    return fake_crew
