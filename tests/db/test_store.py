"""Storage is set-based and idempotent, on SQLite and on PostgreSQL alike."""

import uuid

import sqlalchemy as sa
from sqlmodel import Session

from db.crud import COPY_MIN_ROWS, get_run_outcome, list_api_records, save_run_outcome, upsert_rows
from db.models import RunOutcomeBase
from flows.api_call import store_records
from flows.api_call_params import DestinationSpec
from flows.extraction import Extracted


def _extracted(*pairs):
    return Extracted(records=list(pairs), failures=[])


def test_store_upserts_on_schedule_and_key(any_engine):
    run1, run2 = uuid.uuid4(), uuid.uuid4()
    first = _extracted(("BTC", {"usd": 1}), ("ETH", {"usd": 2}))
    assert store_records.fn(any_engine, first, DestinationSpec(), "prices", run1) == 2
    second = _extracted(("BTC", {"usd": 10}), ("SOL", {"usd": 3}))
    assert store_records.fn(any_engine, second, DestinationSpec(), "prices", run2) == 2
    with Session(any_engine) as session:
        rows, count = list_api_records(session, schedule="prices")
    assert count == 3
    by_key = {r.key: r for r in rows}
    assert by_key["BTC"].data == {"usd": 10} and by_key["BTC"].flow_run_id == run2
    assert by_key["ETH"].flow_run_id == run1


def test_a_retried_store_writes_each_row_once(any_engine):
    run = uuid.uuid4()
    records = _extracted(*[(str(i), {"i": i}) for i in range(50)])
    for _ in range(3):
        store_records.fn(any_engine, records, DestinationSpec(), "retry", run)
    with Session(any_engine) as session:
        assert list_api_records(session, schedule="retry")[1] == 50


def test_without_key_a_run_appends_and_its_retry_does_not(any_engine):
    keyless = _extracted((None, {"p": 1}), (None, {"p": 2}))
    run = uuid.uuid4()
    store_records.fn(any_engine, keyless, DestinationSpec(), "series", run)
    store_records.fn(any_engine, keyless, DestinationSpec(), "series", run)
    store_records.fn(any_engine, keyless, DestinationSpec(), "series", uuid.uuid4())
    with Session(any_engine) as session:
        assert list_api_records(session, schedule="series")[1] == 4


def test_duplicate_keys_in_one_response_keep_the_last(any_engine):
    records = _extracted(("a", {"v": 1}), ("a", {"v": 2}))
    assert store_records.fn(any_engine, records, DestinationSpec(), "dupes", uuid.uuid4()) == 1
    with Session(any_engine) as session:
        rows, _ = list_api_records(session, schedule="dupes")
    assert rows[0].data == {"v": 2}


def test_records_page_newest_first_with_total(any_engine):
    store_records.fn(
        any_engine,
        _extracted(*[(f"k{i}", {}) for i in range(7)]),
        DestinationSpec(),
        "page",
        uuid.uuid4(),
    )
    with Session(any_engine) as session:
        rows, count = list_api_records(session, schedule="page", limit=3, offset=6)
    assert count == 7 and len(rows) == 1


def test_store_into_an_existing_table_upserts_on_its_key_columns(any_engine):
    with any_engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS prices"))
        conn.execute(sa.text("CREATE TABLE prices (symbol VARCHAR(10) PRIMARY KEY, usd FLOAT)"))
    destination = DestinationSpec(table="prices", key_columns=["symbol"])
    try:
        store_records.fn(
            any_engine,
            _extracted((None, {"symbol": "BTC", "usd": 1.0})),
            destination,
            "s",
            uuid.uuid4(),
        )
        store_records.fn(
            any_engine,
            _extracted((None, {"symbol": "BTC", "usd": 2.0})),
            destination,
            "s",
            uuid.uuid4(),
        )
        with any_engine.connect() as conn:
            assert conn.execute(sa.text("SELECT symbol, usd FROM prices")).all() == [("BTC", 2.0)]
    finally:
        with any_engine.begin() as conn:
            conn.execute(sa.text("DROP TABLE prices"))


def test_outcome_is_written_once_per_flow_run(any_engine):
    run = uuid.uuid4()
    with any_engine.begin() as conn:
        save_run_outcome(
            conn, RunOutcomeBase(flow_run_id=run, schedule="s", pipeline="api_call", error="boom")
        )
        save_run_outcome(
            conn,
            RunOutcomeBase(
                flow_run_id=run, schedule="s", pipeline="api_call", items_processed=3, meta={"a": 1}
            ),
        )
    with Session(any_engine) as session:
        outcome = get_run_outcome(session, run)
    assert outcome is not None
    assert (outcome.items_processed, outcome.error, outcome.meta) == (3, None, {"a": 1})


def test_upsert_rows_without_rows_is_a_no_op(any_engine):
    with any_engine.begin() as conn:
        assert (
            upsert_rows(conn, sa.Table("api_records", sa.MetaData(), autoload_with=conn), []) == 0
        )


def test_a_large_batch_upserts_like_a_small_one(any_engine):
    """Above COPY_MIN_ROWS PostgreSQL takes the COPY path: same rows, same upsert semantics."""
    run1, run2 = uuid.uuid4(), uuid.uuid4()
    n = COPY_MIN_ROWS * 2
    first = _extracted(*[(f"k{i}", {"i": i, "tags": ["a"]}) for i in range(n)])
    store_records.fn(any_engine, first, DestinationSpec(), "bulk", run1)
    second = _extracted(
        *[(f"k{i}", {"i": -i}) for i in range(n // 2, n + n // 2)], ("k0", {"i": 0})
    )
    assert store_records.fn(any_engine, second, DestinationSpec(), "bulk", run2) == n + 1
    with Session(any_engine) as session:
        rows, count = list_api_records(session, schedule="bulk", limit=10_000)
    assert count == n + n // 2
    by_key = {r.key: r for r in rows}
    assert by_key["k1"].data == {"i": 1, "tags": ["a"]} and by_key["k1"].flow_run_id == run1
    assert by_key[f"k{n - 1}"].data == {"i": -(n - 1)} and by_key[f"k{n - 1}"].flow_run_id == run2
    assert by_key["k0"].flow_run_id == run2
    assert all(r.fetched_at.tzinfo is not None for r in rows)
