"""Fault item 12: /health says what is wrong with our database (read-only, gone, not
migrated) instead of "ok", and nothing creates an empty database in place of a lost one."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from api.main import create_app
from db.engine import DatabaseMissing, create_db_engine, get_engine
from db.health import database_problem, schema_head
from db.migrate import upgrade


@pytest.fixture
def migrated(tmp_path: Path) -> Path:
    path = tmp_path / "pipelines.db"
    upgrade(f"sqlite:///{path}")
    return path


def health(engine: sa.engine.Engine) -> tuple[int, dict[str, str]]:
    with TestClient(create_app(engine), base_url="http://127.0.0.1") as client:
        response = client.get("/health")
    return response.status_code, response.json()


def test_a_migrated_writable_database_is_healthy(prefect_api_url, migrated):
    assert database_problem(create_db_engine(f"sqlite:///{migrated}")) is None
    code, body = health(create_db_engine(f"sqlite:///{migrated}"))
    assert (code, body) == (
        200,
        {"status": "ok", "database": "ok", "prefect": "ok", **worker(body)},
    )


def worker(body: dict[str, str]) -> dict[str, str]:
    """The worker's part of an answer, checked for its form: ok, or why not."""
    assert body["worker"] == "ok" or "pool 'test-pipelines'" in body["worker"], body
    return {"worker": body["worker"]}


def test_a_database_opened_read_only_is_unhealthy(prefect_api_url, migrated):
    """As a read-only file or mount does (also for root, which file modes do not stop)."""
    engine = sa.create_engine(f"sqlite:///file:{migrated}?mode=ro&uri=true")
    code, body = health(engine)
    assert code == 503, body
    assert "readonly" in body["database"] and body["status"] == "unavailable"


def test_an_unmigrated_database_is_unhealthy(prefect_api_url, tmp_path):
    empty = create_db_engine(f"sqlite:///{tmp_path / 'empty.db'}")
    code, body = health(empty)
    assert code == 503
    assert "not migrated" in body["database"] and str(schema_head()) in body["database"]


def test_a_missing_database_is_never_created_by_flows_or_the_api(prefect_api_url, tmp_path):
    gone = tmp_path / "gone" / "pipelines.db"
    with pytest.raises(DatabaseMissing, match=r"python -m db\.migrate"):
        get_engine(f"sqlite:///{gone}")
    assert not gone.exists() and not gone.parent.exists()


def test_a_database_deleted_under_a_running_process_is_not_recreated(prefect_api_url, migrated):
    engine = create_db_engine(f"sqlite:///{migrated}", must_exist=True)
    assert database_problem(engine) is None
    engine.dispose()
    migrated.unlink()
    problem = database_problem(engine)
    assert problem is not None and "unable to open database file" in problem
    assert not migrated.exists()


def test_postgresql_healthy_and_read_only(postgres_engine):
    assert database_problem(postgres_engine) is None
    read_only = sa.create_engine(
        postgres_engine.url, connect_args={"options": "-c default_transaction_read_only=on"}
    )
    problem = database_problem(read_only)
    assert problem is not None and "read-only transaction" in problem
    read_only.dispose()
