"""users and crew_responses: paging, idempotent storage and the crew filters, on both DBs."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlmodel import Session

from db.crew import (
    count_eligible_users,
    delete_crew_response,
    get_crew_response,
    list_crew_responses,
    load_user_page,
    succeeded_uids,
    upsert_users,
    users_table,
)
from db.crud import COPY_MIN_ROWS
from flows.crew_calls import CrewResult, CrewUser
from flows.crew_responses import store_responses


def _users(n: int) -> list[dict[str, str | None]]:
    # Every 4th user has neither context nor goal (blank counts as none).
    return [
        {
            "uid": f"u{i:05d}",
            "context": None if i % 4 == 0 else f"ctx {i}",
            "goal": "  " if i % 4 == 0 else f"goal {i}",
        }
        for i in range(n)
    ]


def _results(uids: list[str], failed: set[str] = frozenset()) -> list[CrewResult]:  # type: ignore[assignment]
    return [
        CrewResult(CrewUser(u, f"ctx {u}", None), error="HTTP 500")
        if u in failed
        else CrewResult(CrewUser(u, f"ctx {u}", None), response={"plan": u, "nested": [1, 2]})
        for u in uids
    ]


def _store(engine, results, run) -> int:
    return asyncio.run(store_responses.fn(engine, results, run))


def test_users_upsert_by_uid_and_page_by_key_without_a_cap(any_engine):
    with any_engine.begin() as conn:
        assert upsert_users(conn, _users(2_500)) == 2_500
        upsert_users(conn, [{"uid": "u00000", "context": "now eligible", "goal": None}])
    table = users_table()
    with any_engine.connect() as conn:
        assert count_eligible_users(conn, table) == 2_500 - 625 + 1
        seen, after = [], None
        while page := load_user_page(conn, table, after, 1_000):
            seen += page
            after = page[-1][0]
    assert len(seen) == 1_876 and len({uid for uid, _, _ in seen}) == 1_876
    assert seen[0] == ("u00000", "now eligible", None)


def test_a_restored_batch_replaces_its_rows_and_never_duplicates(any_engine):
    run, other_run = uuid.uuid4(), uuid.uuid4()
    uids = [f"u{i}" for i in range(COPY_MIN_ROWS + 10)]  # the COPY path on PostgreSQL
    assert _store(any_engine, _results(uids, failed={"u1", "u2"}), run) == len(uids)
    # A retry of the same run: u1 now succeeds, everything else is written again.
    _store(any_engine, _results(uids, failed={"u2"}), run)
    _store(any_engine, _results(uids[:5]), other_run)
    with any_engine.connect() as conn:
        counts = dict(
            conn.execute(
                sa.text("SELECT status, COUNT(*) FROM crew_responses GROUP BY status")
            ).all()
        )
        assert counts == {"succeeded": len(uids) - 1 + 5, "failed": 1}
        assert succeeded_uids(conn, run, ["u1", "u2", "nobody"]) == {"u1"}
    with Session(any_engine) as session:
        rows, total = list_crew_responses(session, user_uid="u2")
    assert total == 2 and {r.status for r in rows} == {"failed", "succeeded"}
    failed = next(r for r in rows if r.status == "failed")
    assert failed.error == "HTTP 500" and failed.response_data is None
    ok = next(r for r in rows if r.status == "succeeded")
    assert ok.response_data == {"plan": "u2", "nested": [1, 2]}


def test_responses_filter_by_user_and_time_newest_first(any_engine):
    run = uuid.uuid4()
    _store(any_engine, _results(["a", "b"]), run)
    later = datetime.now(UTC) + timedelta(hours=1)
    with any_engine.begin() as conn:
        conn.execute(
            sa.text("UPDATE crew_responses SET created_at = :t WHERE user_uid = 'b'"),
            {"t": later},
        )
    with Session(any_engine) as session:
        rows, total = list_crew_responses(session)
        assert [r.user_uid for r in rows] == ["b", "a"] and total == 2
        since = later - timedelta(minutes=1)
        assert [r.user_uid for r in list_crew_responses(session, start=since)[0]] == ["b"]
        assert [r.user_uid for r in list_crew_responses(session, end=since)[0]] == ["a"]
        page, total = list_crew_responses(session, limit=1, offset=1)
        assert [r.user_uid for r in page] == ["a"] and total == 2
        row = rows[0]
        assert row.id is not None and get_crew_response(session, row.id) is not None
        assert delete_crew_response(session, row.id) is True
        session.commit()
        assert get_crew_response(session, row.id) is None
        assert delete_crew_response(session, row.id) is False


def test_response_data_is_jsonb_on_postgresql(postgres_engine):
    with postgres_engine.connect() as conn:
        kind = conn.execute(
            sa.text(
                "SELECT data_type FROM information_schema.columns "
                "WHERE table_name = 'crew_responses' AND column_name = 'response_data'"
            )
        ).scalar_one()
        indexes = set(
            conn.execute(
                sa.text("SELECT indexname FROM pg_indexes WHERE tablename = 'crew_responses'")
            ).scalars()
        )
    assert kind == "jsonb"
    assert {
        "ix_crew_responses_user_uid",
        "ix_crew_responses_created_at",
        "ix_crew_responses_user_uid_created_at",
        "uq_crew_responses_run_user",
    } <= indexes
