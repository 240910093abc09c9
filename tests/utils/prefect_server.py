"""Asking the test Prefect server directly (its REST API), as an operator's script would."""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import httpx


def request_retrying(method: str, url: str, **kwargs: Any) -> httpx.Response:
    """A request to the test server, waiting out the 503s its SQLite answers while busy."""
    for attempt in range(6):
        response = httpx.request(method, url, timeout=30, **kwargs)
        if response.status_code != 503:
            break
        time.sleep(2**attempt)
    return response


def post_retrying(url: str, json: dict[str, Any]) -> httpx.Response:
    """POST to the test server, waiting out the 503s its SQLite answers while busy."""
    return request_retrying("POST", url, json=json)


def plan_runs(api_url: str, deployment_id: str, start: datetime, end: datetime) -> None:
    """Have Prefect plan the runs of a window (the test server runs no scheduler loop)."""
    response = post_retrying(
        f"{api_url}/deployments/{deployment_id}/schedule",
        json={
            "start_time": start.isoformat(),
            "end_time": end.isoformat(),
            "min_time": (end - start).total_seconds(),
            "min_runs": 100,
            "max_runs": 100,
        },
    )
    response.raise_for_status()


def planned_runs(api_url: str, deployment_id: str) -> list[datetime]:
    response = httpx.post(
        f"{api_url}/flow_runs/filter",
        json={
            "deployments": {"id": {"any_": [deployment_id]}},
            "flow_runs": {"state": {"type": {"any_": ["SCHEDULED"]}}},
            "sort": "EXPECTED_START_TIME_ASC",
            "limit": 100,
        },
    )
    response.raise_for_status()
    return [datetime.fromisoformat(r["expected_start_time"]) for r in response.json()]


def deployment_count(api_url: str) -> int:
    return int(httpx.post(f"{api_url}/deployments/count", json={}).json())
