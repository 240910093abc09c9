"""A run's Prefect logs say what it did, in the pipeline's words, and never a secret.

The api_call flow runs in-process on the test server with its run loggers at INFO (the suite
logs at WARNING), a credential header from a Secret block and a key in the query string; the
logs Prefect stored for the run name the request, its status and the item and row counts.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prefect.blocks.system import Secret
from prefect.client.schemas.objects import State

from flows.api_call import api_call
from tests.utils.http_source import Reply, serve_http_source

PRICES = {"data": [{"symbol": "BTC", "usd": 1.5}, {"symbol": "ETH", "usd": 2.5}, {"usd": 3}]}
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


@pytest.fixture
def info_logs() -> Iterator[None]:
    loggers = [logging.getLogger(name) for name in RUN_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.INFO)
    yield
    for logger, level in zip(loggers, levels, strict=True):
        logger.setLevel(level)


def run_logs(api_url: str, flow_run_id: str, *expected: str) -> str:
    """The run's log messages in Prefect, once each `expected` text is in them (or 30 s)."""
    deadline = time.monotonic() + 30
    messages: list[str] = []
    while time.monotonic() < deadline:
        logs = httpx.post(
            f"{api_url}/logs/filter",
            json={"logs": {"flow_run_id": {"any_": [flow_run_id]}}, "limit": 200},
            timeout=30,
        ).json()
        messages = [entry["message"] for entry in logs]
        if all(any(e in m for m in messages) for e in expected):
            break
        time.sleep(0.5)
    return "\n".join(messages)


def test_a_runs_logs_name_the_request_the_items_and_the_rows_and_no_secret(
    prefect_api_url: str, sqlite_engine: Any, info_logs: None
) -> None:
    Secret(value=json.dumps({"Authorization": "Bearer h-s3cret"})).save("log-creds", overwrite=True)
    with serve_http_source() as source:
        source.route("/prices", Reply(200, PRICES))
        state: State[Any] = asyncio.run(
            api_call(  # type: ignore[arg-type]
                source={"base_url": source.url, "headers_secret": "log-creds"},
                request={"path": "/prices", "query": {"api_key": "q-s3cret"}},
                extract={"root": "data[]", "key": "symbol"},
                return_state=True,
            )
        )
    assert state.is_completed(), state
    lines = (
        f"GET {source.url}/prices?api_key=… → 200 OK",
        "extracted 2 records with `data[]`, 1 unreadable",
        "stored 2 rows in `api_records`",
    )
    text = run_logs(prefect_api_url, str(state.state_details.flow_run_id), *lines)
    assert all(line in text for line in lines), text
    assert "s3cret" not in text


def test_a_crew_runs_logs_name_the_users_the_endpoint_and_the_rows(
    prefect_api_url: str, sqlite_engine: Any, crew: Any, info_logs: None
) -> None:
    from db.crew import upsert_users
    from flows.crew_responses import crew_responses

    with sqlite_engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM users")
        conn.exec_driver_sql("DELETE FROM crew_responses")
        upsert_users(conn, [{"uid": f"log-{i}", "context": "c", "goal": "g"} for i in range(3)])
    state: State[Any] = asyncio.run(crew_responses(return_state=True))  # type: ignore[arg-type]
    assert state.is_completed(), state
    lines = (
        "loaded 3 users from `users`",
        f"sent 3 users to {crew.url} in ",
        ": 3 answered, 0 failed",
        "stored 3 responses in `crew_responses`",
    )
    text = run_logs(prefect_api_url, str(state.state_details.flow_run_id), *lines)
    assert all(line in text for line in lines), text
