"""The crew flow in-process on the test Prefect server against the fake crew API on 127.0.0.1."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from prefect import get_client
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from blocks.crew import UserSource
from db.crew import upsert_users
from db.models import RunOutcome
from flows import crew_responses as crew_module
from flows.crew_responses import crew_responses
from tests.utils.services import CREW_API_PORT
from tests.utils.tables import fresh_table

QUICK: dict[str, Any] = {
    "retries": 1,
    "backoff_seconds": 0.01,
    "timeout_seconds": 2.0,  # far above an answer's few ms, even on a loaded CI machine
    "concurrency": 20,
}


@pytest.fixture
def users(prefect_api_url: str, sqlite_engine: Engine) -> Iterator[list[dict[str, Any]]]:
    """100 users in our table; every 5th has neither context nor goal."""
    rows = [
        {
            "uid": f"user-{i:03d}",
            "context": None if i % 5 == 0 else f"business {i}",
            "goal": None if i % 5 == 0 else f"goal {i}",
        }
        for i in range(100)
    ]
    with sqlite_engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM users"))
        conn.execute(sa.text("DELETE FROM crew_responses"))
        upsert_users(conn, rows)
    yield [r for r in rows if r["context"]]


def run(**parameters: Any) -> dict[str, int]:
    result: dict[str, int] = asyncio.run(crew_responses(**{**QUICK, **parameters}))
    return result


def stored(engine: Engine) -> list[tuple[str, str, str | None, str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT user_uid, status, error, flow_run_id FROM crew_responses")
        ).all()
    return [(r[0], r[1], r[2], str(r[3])) for r in rows]


def last_outcome(engine: Engine) -> RunOutcome:
    with Session(engine) as session:
        outcome = session.exec(select(RunOutcome).order_by(RunOutcome.id.desc())).first()  # type: ignore[union-attr]
    assert outcome is not None
    return outcome


def test_every_eligible_user_ends_with_one_row_despite_500s_and_timeouts(
    crew, users, sqlite_engine
):
    crew.fail_rate, crew.timeout_rate, crew.latency = 0.20, 0.05, 0.01
    fates = {u["uid"]: crew.fate(crew.key(crew_body(u))) for u in users}
    result = run(batch_size=30)
    rows = stored(sqlite_engine)
    assert sorted(uid for uid, *_ in rows) == sorted(fates)  # one row per eligible user
    by_uid = {uid: (status, error) for uid, status, error, _ in rows}
    for uid, fate in fates.items():
        status, error = by_uid[uid]
        expected = {"ok": "succeeded", "fail": "failed", "hang": "failed"}[fate]
        assert status == expected, (uid, fate, error)
        if fate == "fail":
            assert error is not None and error.startswith("HTTP 500")
        if fate == "hang":
            assert error is not None and error.startswith("timeout: ReadTimeout")
    failed = sum(1 for f in fates.values() if f != "ok")
    assert 10 <= failed <= 35  # about a quarter of 80 users
    assert result == {"succeeded": 80 - failed, "failed": failed}
    outcome = last_outcome(sqlite_engine)
    assert (outcome.items_processed, outcome.items_succeeded, outcome.items_failed) == (
        80,
        80 - failed,
        failed,
    )
    # Failing users were tried twice (retries=1), the others once.
    assert all(
        crew.hits[crew.key(crew_body(u))] == (1 if fates[u["uid"]] == "ok" else 2) for u in users
    )


def crew_body(user: dict[str, Any]) -> dict[str, Any]:
    return {
        "customer_business_background_latest": user["context"],
        "customer_goal_latest": user["goal"],
    }


def test_the_crew_request_body_is_sent_and_the_answer_stored(crew, users, sqlite_engine):
    run()
    assert sorted(crew.bodies, key=str) == sorted((crew_body(u) for u in users), key=str)
    with sqlite_engine.connect() as conn:
        row = conn.execute(
            sa.text(
                "SELECT request_context, request_goal, response_data FROM crew_responses "
                "WHERE user_uid = 'user-001'"
            )
        ).one()
    assert row[0:2] == ("business 1", "goal 1")
    assert '"plan for goal 1"' in row[2]


@pytest.mark.parametrize("page_size", [7, 79, 80, 81])
def test_pages_of_any_size_send_every_user_once(crew, users, sqlite_engine, page_size):
    """80 eligible users: pages that end before, at and after the last user."""
    assert run(page_size=page_size, batch_size=5) == {"succeeded": 80, "failed": 0}
    assert sorted(crew.bodies, key=str) == sorted((crew_body(u) for u in users), key=str)
    assert len(stored(sqlite_engine)) == 80


def test_a_flow_retry_after_the_api_was_down_stores_each_user_once(crew, users, sqlite_engine):
    # The API refuses everyone twice: with one call retry, every user fails, so the run fails
    # and Prefect retries it; the same run then stores each user once, as succeeded.
    crew.fail_first = 2
    retrying = crew_responses.with_options(retries=1, retry_delay_seconds=0)
    result = asyncio.run(retrying(**QUICK))
    assert result == {"succeeded": 80, "failed": 0}
    rows = stored(sqlite_engine)
    assert len(rows) == 80 and {status for _, status, _, _ in rows} == {"succeeded"}
    assert len({run_id for *_, run_id in rows}) == 1


def test_a_retry_after_a_crash_skips_stored_users_and_duplicates_nothing(
    crew, users, sqlite_engine, monkeypatch
):
    # The store of the second batch commits, then "loses its connection", three times:
    # the store task's own retries write the same rows again, then the flow run fails and
    # is retried by Prefect, which calls only the users not stored yet.
    real = crew_module.upsert_crew_responses
    crashes = {"left": 3}

    def flaky_upsert(conn: Any, rows: Any) -> int:
        with sqlite_engine.begin() as own:
            written = real(own, rows)
        if rows[0]["user_uid"] == "user-026" and crashes["left"]:
            crashes["left"] -= 1
            raise ConnectionError("connection lost after commit")
        return written

    monkeypatch.setattr(crew_module, "upsert_crew_responses", flaky_upsert)
    retrying = crew_responses.with_options(retries=1, retry_delay_seconds=0)
    # Batches of 20: one call at a time, so that batches finish in order.
    result = asyncio.run(retrying(**{**QUICK, "concurrency": 1, "batch_size": 20}))
    rows = stored(sqlite_engine)
    assert len(rows) == 80 and len({uid for uid, *_ in rows}) == 80
    assert crashes["left"] == 0
    # Every batch had committed before the run failed: its retry called nobody again.
    assert len(crew.hits) == 80 and set(crew.hits.values()) == {1}
    assert result == {"succeeded": 80, "failed": 0}
    assert last_outcome(sqlite_engine).meta["already_stored"] == 80


def test_users_can_come_from_another_database(crew, sqlite_engine, postgres_engine):
    fresh_table(
        postgres_engine, "app_users", "uid TEXT PRIMARY KEY, email TEXT, context TEXT, goal TEXT"
    )
    with postgres_engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO app_users VALUES ('pg-1', 'a@x', 'cafe', 'grow'), "
                "('pg-2', 'b@x', NULL, 'hire'), ('pg-3', 'c@x', NULL, NULL)"
            )
        )
    with sqlite_engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM crew_responses"))
    url = postgres_engine.url.render_as_string(hide_password=False)
    UserSource(url=url, table="app_users").save("app-users", overwrite=True)
    try:
        assert run(users="app-users") == {"succeeded": 2, "failed": 0}
        assert sorted(uid for uid, *_ in stored(sqlite_engine)) == ["pg-1", "pg-2"]
    finally:
        with postgres_engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE app_users"))


def test_the_run_shows_progress_and_a_summary_in_prefect(crew, users, sqlite_engine):
    run(batch_size=25)
    run_id = stored(sqlite_engine)[0][3]

    async def artifacts() -> dict[str, Any]:
        from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId

        async with get_client() as client:
            found = await client.read_artifacts(
                artifact_filter=ArtifactFilter(
                    flow_run_id=ArtifactFilterFlowRunId(any_=[uuid.UUID(run_id)])
                )
            )
        return {str(a.type): a for a in found}

    found = asyncio.run(artifacts())
    assert found["progress"].data == 100.0
    assert "80 users handled" in (found["table"].description or "")


def test_a_rate_limit_per_host_slows_the_calls_through_prefect(crew, users, sqlite_engine):
    started = time.monotonic()
    assert run(requests_per_second=40.0)["succeeded"] == 80
    # 40 slots at once, then 40 per second: the last 40 calls wait about a second.
    assert time.monotonic() - started >= 0.8

    async def limit() -> Any:
        async with get_client() as client:
            return await client.read_global_concurrency_limit_by_name(
                f"crew-api-127-0-0-1-{CREW_API_PORT}"
            )

    assert asyncio.run(limit()).slot_decay_per_second == 40.0
