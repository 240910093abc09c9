"""`GET /api/monitor` and `GET /metrics` over a real Prefect server, worker and our database."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prefect import get_client
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelled, Completed, Running
from prefect.utilities.asyncutils import run_coro_as_sync
from prometheus_client.parser import text_string_to_metric_families

from tests.utils.factories import api_call_spec
from tests.utils.http_source import HttpSource
from tests.utils.runs import (
    create_scheduled_runs,
    park_where_no_worker_serves,
    wait_for_run,
    wait_until,
)

pytestmark = pytest.mark.e2e


def schedule(api: TestClient, source: HttpSource, path: str = "/prices", **fields: Any) -> dict:
    name = f"mon-{uuid.uuid4().hex[:8]}"
    spec = api_call_spec(name, source.url, path, **fields)
    spec["parameters"]["request"].update(retries=0, timeout_seconds=15)
    answer = api.post("/api/schedules", json=spec)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def run_now(api: TestClient, name: str) -> str:
    answer = api.post(f"/api/schedules/{name}/run")
    assert answer.status_code == 202, answer.text
    return str(answer.json()["flow_run_id"])


def on_the_list(api: TestClient, key: str, name: str) -> dict | None:
    report = api.get("/api/monitor")
    assert report.status_code == 200, report.text
    return next((e for e in report.json()[key] if e["schedule"] == name), None)


def prefect(work: Any) -> Any:
    async def call() -> Any:
        async with get_client() as client:
            return await work(client)

    return run_coro_as_sync(call())


def test_the_monitor_lists_failed_stuck_stale_and_late(
    api: TestClient, worker: Any, source: HttpSource, work_pool: str
) -> None:
    failing = schedule(api, source, "/down")
    failed_run = run_now(api, failing["name"])
    assert wait_for_run(api, failed_run)["state_type"] == "FAILED"
    entry = wait_until(lambda: on_the_list(api, "failed", failing["name"]), "failed listed", 30)
    assert entry["run_id"] == failed_run and entry["state"] == "Failed"

    # Stuck: three completed runs of ~0 s, then one running for longer than 3x that. Made in
    # Prefect directly (no worker takes a run created Running), so the times are exact.
    slow = schedule(api, source)
    deployment_id = uuid.UUID(slow["deployment_id"])

    async def history_then_a_long_run(client: Any) -> str:
        for _ in range(3):
            run = await client.create_flow_run_from_deployment(deployment_id, state=Running())
            await client.set_flow_run_state(run.id, Completed(), force=True)
        running = await client.create_flow_run_from_deployment(deployment_id, state=Running())
        return str(running.id)

    running_id = prefect(history_then_a_long_run)
    stuck = wait_until(lambda: on_the_list(api, "stuck", slow["name"]), "stuck listed", 30, 0.5)
    assert stuck["run_id"] == running_id and "median" in stuck["detail"]

    # Late and stale: an every-2-s schedule whose queue no worker serves (paused), with a run
    # due a minute ago.
    quiet = schedule(api, source, timing={"type": "interval", "every_seconds": 2})

    park_where_no_worker_serves(work_pool, quiet["deployment_id"])
    due = datetime.now(UTC) - timedelta(minutes=1)
    create_scheduled_runs(str(PREFECT_API_URL.value()), quiet["deployment_id"], [due])
    late = wait_until(lambda: on_the_list(api, "late", quiet["name"]), "late listed", 30, 0.5)
    assert "not started" in late["detail"]
    stale = wait_until(lambda: on_the_list(api, "stale", quiet["name"]), "stale listed", 30, 0.5)
    assert stale["run_id"] is None and "runs every 2 s" in stale["detail"]

    prefect(lambda client: client.set_flow_run_state(running_id, Cancelled(), force=True))
    for name in (quiet["name"], slow["name"], failing["name"]):
        assert api.delete(f"/api/schedules/{name}").status_code == 204


def scrape(api: TestClient) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, parsed with prometheus-client's own parser."""
    answer = api.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(answer.text)
        for sample in family.samples
    }


def sample(found: dict, name: str, **labels: str) -> float:
    return float(found.get((name, tuple(sorted(labels.items()))), 0.0))


def test_metrics_count_what_ran(api: TestClient, worker: Any, source: HttpSource) -> None:
    scrape(api)  # what ran before this test is counted already
    good = schedule(api, source)["name"]
    bad = schedule(api, source, "/down")["name"]
    for name in (good, bad):
        wait_for_run(api, run_now(api, name))

    found = scrape(api)
    ours = {"schedule": good, "pipeline": "api_call"}
    assert sample(found, "sp_runs_started_total", **ours) == 1
    assert sample(found, "sp_runs_finished_total", **ours, state="Completed") == 1
    failed = {"schedule": bad, "pipeline": "api_call", "state": "Failed"}
    assert sample(found, "sp_runs_finished_total", **failed) == 1
    assert sample(found, "sp_run_duration_seconds_count", **ours) == 1
    assert sample(found, "sp_run_lateness_seconds_count", **ours) == 1
    assert sample(found, "sp_items_processed_total", **ours) == 1
    assert sample(found, "sp_items_failed_total", **ours) == 0
    run_route = {"method": "POST", "route": "/api/schedules/{name}/run", "status": "202"}
    assert sample(found, "sp_api_requests_total", **run_route) >= 2
    assert ("sp_runs_queued", (("state", "late"),)) in found
    latency = {"method": "POST", "route": "/api/schedules/{name}/run"}
    assert sample(found, "sp_api_request_duration_seconds_count", **latency) >= 2

    # A second scrape counts nothing twice.
    again = scrape(api)
    assert sample(again, "sp_runs_started_total", **ours) == 1
    assert sample(again, "sp_runs_finished_total", **ours, state="Completed") == 1
