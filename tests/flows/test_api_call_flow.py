"""The api_call flow run in-process on the test Prefect server: secrets, destinations, failures."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from prefect.blocks.system import Secret
from sqlmodel import Session, select

from db.models import RunOutcome
from flows.api_call import api_call
from tests.utils.http_source import HttpSource, Reply, serve_http_source
from tests.utils.tables import fresh_table

PRICES = {
    "data": [{"symbol": "BTC", "quote": {"usd": 1.5}}, {"symbol": "ETH", "quote": {"usd": 2.5}}]
}


@pytest.fixture
def source() -> Iterator[HttpSource]:
    with serve_http_source() as source:
        yield source


def run_flow(**parameters: Any) -> dict[str, int]:
    result: dict[str, int] = asyncio.run(api_call(**parameters))
    return result


def test_credential_headers_come_from_a_secret_block(prefect_api_url, sqlite_engine, source):
    Secret(value=json.dumps({"Authorization": "Bearer s3cret"})).save(
        "source-creds", overwrite=True
    )
    source.route("/prices", Reply(200, PRICES))
    result = run_flow(
        source={"base_url": source.url, "headers_secret": "source-creds"},
        request={"path": "/prices"},
        extract={"root": "data[]", "key": "symbol"},
    )
    assert result == {"processed": 2, "stored": 2, "failed": 0}
    assert source.requests[-1]["headers"]["Authorization"] == "Bearer s3cret"


def test_records_go_into_a_destination_block_table_upserted_on_its_key(
    prefect_api_url, sqlite_engine, warehouse, source
):
    source.route("/prices", Reply(200, PRICES))
    parameters = {
        "source": {"base_url": source.url},
        "request": {"path": "/prices"},
        "extract": {"root": "data[]", "fields": {"symbol": "symbol", "usd": "quote.usd"}},
        "destination": {"block": "warehouse", "table": "prices", "key_columns": ["symbol"]},
    }
    run_flow(**parameters)
    run_flow(**parameters)
    with warehouse.connect() as conn:
        rows = conn.execute(sa.text("SELECT symbol, usd FROM prices ORDER BY symbol")).all()
    assert rows == [("BTC", 1.5), ("ETH", 2.5)]


def test_a_failed_run_records_its_outcome_and_raises(prefect_api_url, sqlite_engine, source):
    source.route("/broken", Reply(200, b"<html>not json</html>", {"content-type": "text/html"}))
    with pytest.raises(ValueError, match="not JSON"):
        run_flow(source={"base_url": source.url}, request={"path": "/broken", "retries": 0})
    with Session(sqlite_engine) as session:
        outcome = session.exec(select(RunOutcome).order_by(RunOutcome.id.desc())).first()  # type: ignore[union-attr]
    assert outcome is not None and "not JSON" in (outcome.error or "")


def test_a_failed_store_reports_the_error_without_the_records(
    prefect_api_url, sqlite_engine, source
):
    """Fault item 15: when our database refuses the rows, the run's state message, its
    outcome and the raised error name the failure, never the record data being stored."""
    fresh_table(
        sqlite_engine, "checked_prices", "symbol TEXT PRIMARY KEY, usd REAL CHECK (usd < 0)"
    )
    source.route(
        "/secretive", Reply(200, {"data": [{"symbol": "SENSITIVE-123", "quote": {"usd": 7}}]})
    )
    state: Any = asyncio.run(
        api_call(  # type: ignore[arg-type]
            source={"base_url": source.url},
            request={"path": "/secretive"},
            extract={"root": "data[]", "fields": {"symbol": "symbol", "usd": "quote.usd"}},
            destination={"table": "checked_prices", "key_columns": ["symbol"]},
            return_state=True,
        )
    )
    assert state.is_failed()
    assert "CHECK constraint failed" in (state.message or "")
    assert "SENSITIVE-123" not in (state.message or "")
    with pytest.raises(Exception) as raised:
        state.result()
    assert "SENSITIVE-123" not in str(raised.value)
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    with Session(sqlite_engine) as session:
        outcome = session.exec(select(RunOutcome).order_by(RunOutcome.id.desc())).first()  # type: ignore[union-attr]
    assert outcome is not None and "CHECK constraint failed" in (outcome.error or "")
    assert "SENSITIVE-123" not in (outcome.error or "")
