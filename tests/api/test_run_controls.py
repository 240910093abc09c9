"""Cancel and retry a flow run through our API (`POST /api/runs/{id}/cancel|retry`), on a real
Prefect server and worker."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prefect import get_client
from prefect.states import Scheduled
from prefect.utilities.asyncutils import run_coro_as_sync

from tests.utils.factories import api_call_spec
from tests.utils.http_source import HttpSource, Reply, serve_http_source
from tests.utils.runs import flow_run, wait_for_run, wait_until

pytestmark = pytest.mark.e2e
PRICES = {"data": [{"symbol": "BTC", "quote": {"usd": 64000.0}}]}


@pytest.fixture(scope="module")
def source() -> Iterator[HttpSource]:
    with serve_http_source() as source:
        yield source


def schedule(api: TestClient, source: HttpSource, path: str, **parameters: Any) -> str:
    name = f"controls-{uuid.uuid4().hex[:8]}"
    spec = api_call_spec(name, source.url, path)
    spec["parameters"]["request"].update(parameters)
    assert api.post("/api/schedules", json=spec).status_code == 201
    return name


def test_a_failed_run_is_retried_with_its_parameters_once(
    api: TestClient, worker: Any, source: HttpSource
):
    source.route("/flaky", Reply(500, {"error": "down"}))
    name = schedule(api, source, "/flaky", retries=0)
    failed = wait_for_run(api, api.post(f"/api/schedules/{name}/run").json()["flow_run_id"])
    assert failed["state_type"] == "FAILED"
    assert api.post(f"/api/runs/{failed['id']}/cancel").status_code == 409  # finished

    source.route("/flaky", Reply(200, PRICES))
    first = api.post(f"/api/runs/{failed['id']}/retry")
    assert first.status_code == 202, first.text
    again = api.post(f"/api/runs/{failed['id']}/retry").json()
    assert again == first.json()  # asked twice: the same new run
    retried = wait_for_run(api, again["flow_run_id"])
    assert retried["state_type"] == "COMPLETED", retried
    assert retried["parameters"] == failed["parameters"]
    assert f"retry-of:{failed['id']}" in retried["tags"]
    conflict = api.post(f"/api/runs/{retried['id']}/retry")
    assert conflict.status_code == 409 and "only a failed" in conflict.json()["detail"]
    assert api.post(f"/api/runs/{uuid.uuid4()}/retry").status_code == 404


def test_a_scheduled_run_is_cancelled_before_it_starts(
    api: TestClient, worker: Any, source: HttpSource, prefect_api_url: str
):
    name = schedule(api, source, "/never")
    deployment_id = api.get(f"/api/schedules/{name}").json()["deployment_id"]

    async def later() -> str:
        async with get_client() as client:
            run = await client.create_flow_run_from_deployment(
                deployment_id,
                state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(hours=1)),
            )
            return str(run.id)

    run_id = run_coro_as_sync(later())
    answer = api.post(f"/api/runs/{run_id}/cancel")
    assert answer.status_code == 200, answer.text
    assert answer.json()["state_type"] == "CANCELLED"
    assert source.hits.get("/never", 0) == 0


def test_a_running_run_is_cancelled_and_its_process_stopped(
    api: TestClient, worker: Any, source: HttpSource, prefect_api_url: str
):
    source.route("/slow", Reply(200, PRICES, delay=30))
    name = schedule(api, source, "/slow", timeout_seconds=60, retries=0)
    run_id = api.post(f"/api/schedules/{name}/run").json()["flow_run_id"]
    wait_until(lambda: source.hits.get("/slow", 0) >= 1, "the run calling its source", 60)
    started = time.monotonic()
    answer = api.post(f"/api/runs/{run_id}/cancel")
    assert answer.status_code == 200, answer.text
    assert answer.json()["state_type"] in ("CANCELLING", "CANCELLED")
    ended = wait_until(
        lambda: (run := flow_run(prefect_api_url, run_id))["state_type"] == "CANCELLED" and run,
        "the run ending cancelled",
        60,
    )
    assert ended["state_type"] == "CANCELLED"
    assert time.monotonic() - started < 25  # stopped, not waited out
