"""The API app over the session's Prefect server and database, and helpers to wait on runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.main import create_app

FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


@pytest.fixture(scope="session")
def api(prefect_api_url: str, work_pool: str, sqlite_engine: Engine) -> Iterator[TestClient]:
    with TestClient(create_app(sqlite_engine)) as client:
        yield client


def wait_for_run(api: TestClient, run_id: str, timeout: float = 120) -> dict[str, Any]:
    """Poll /api/runs/{id} until the run reaches a final state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/api/runs/{run_id}").json()
        if run.get("state_type") in FINAL_STATES:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s: {run}")


def api_call_spec(
    name: str, base_url: str, path: str = "/prices", **overrides: Any
) -> dict[str, Any]:
    """An api_call schedule for a source on 127.0.0.1, with quick retries."""
    spec: dict[str, Any] = {
        "name": name,
        "pipeline": "api_call",
        "timing": {"type": "manual"},
        "parameters": {
            "source": {"base_url": base_url},
            "request": {"path": path, "retries": 3, "backoff_seconds": 0.2, "timeout_seconds": 5},
            "extract": {
                "root": "data[]",
                "fields": {"symbol": "symbol", "usd": "quote.usd"},
                "key": "symbol",
            },
        },
    }
    spec.update(overrides)
    return spec
