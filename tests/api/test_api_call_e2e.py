"""api_call end to end: HTTP API -> deployment -> worker -> source on 127.0.0.1 -> records."""

from __future__ import annotations

import re
from collections.abc import Iterator

import httpx
import pytest

from tests.utils.factories import api_call_spec
from tests.utils.http_source import HttpSource, Reply, serve_http_source
from tests.utils.prefect_cli import prefect_cli
from tests.utils.runs import wait_for_run

pytestmark = pytest.mark.e2e

PRICES = {
    "data": [
        {"symbol": "BTC", "quote": {"usd": 64000}},
        {"symbol": "ETH", "quote": {"usd": 3100}},
        {"symbol": "SOL"},
    ]
}


@pytest.fixture(scope="module")
def source() -> Iterator[HttpSource]:
    with serve_http_source() as source:
        yield source


def test_create_run_and_read_records_then_rerun_without_duplicates(
    api, worker, source, prefect_api_url
):
    source.route("/prices", Reply(200, PRICES))
    created = api.post("/api/schedules", json=api_call_spec("e2e-prices", source.url))
    assert created.status_code == 201, created.text
    assert created.json()["timing"] == {"type": "manual"}

    for _ in range(2):
        started = api.post("/api/schedules/e2e-prices/run")
        assert started.status_code == 202
        run = wait_for_run(api, started.json()["flow_run_id"])
        assert run["state_type"] == "COMPLETED", run
        assert run["outcome"]["items_processed"] == 3
        assert run["outcome"]["items_succeeded"] == 3
        artifacts = httpx.post(
            f"{prefect_api_url}/artifacts/filter",
            json={"artifacts": {"flow_run_id": {"any_": [run["id"]]}}},
        ).json()
        assert [(a["key"], a["type"]) for a in artifacts] == [("api-call-e2e-prices", "table")]

    records = api.get("/api/records", params={"schedule": "e2e-prices"}).json()
    assert records["count"] == 3
    assert {r["key"]: r["data"] for r in records["data"]} == {
        "BTC": {"symbol": "BTC", "usd": 64000},
        "ETH": {"symbol": "ETH", "usd": 3100},
        "SOL": {"symbol": "SOL", "usd": None},
    }
    history = api.get("/api/schedules/e2e-prices/runs").json()
    assert history["count"] == 2 and all(r["state_type"] == "COMPLETED" for r in history["data"])
    stats = api.get("/api/schedules/e2e-prices/stats").json()
    assert stats["by_state"] == {"COMPLETED": 2} and stats["success_rate"] == 1.0
    assert stats["items_succeeded"] == 6
    # One truth for the last run: the list shows the one the schedule's own page shows.
    one = api.get("/api/schedules/e2e-prices").json()
    assert one["last_run"]["id"] == run["id"] and one["last_run"]["state_type"] == "COMPLETED"
    listed = api.get("/api/schedules", params={"pipeline": "api_call", "limit": 200}).json()
    (mine,) = [s for s in listed["data"] if s["name"] == "e2e-prices"]
    assert mine["last_run"] == one["last_run"]


def test_run_now_parameters_override_the_schedule_for_one_run(api, worker, source):
    source.route("/other", Reply(200, {"data": [{"symbol": "DOGE", "quote": {"usd": 0.1}}]}))
    assert (
        api.post("/api/schedules", json=api_call_spec("e2e-override", source.url)).status_code
        == 201
    )
    started = api.post(
        "/api/schedules/e2e-override/run", json={"parameters": {"request": {"path": "/other"}}}
    )
    run = wait_for_run(api, started.json()["flow_run_id"])
    assert run["state_type"] == "COMPLETED", run
    assert [r["key"] for r in api.get("/api/records?schedule=e2e-override").json()["data"]] == [
        "DOGE"
    ]
    assert (
        api.get("/api/schedules/e2e-override").json()["parameters"]["request"]["path"] == "/prices"
    )


def test_pause_and_resume_show_in_prefect_and_the_cli_runs_an_api_schedule(
    api, worker, source, prefect_api_url
):
    source.route("/prices", Reply(200, PRICES))
    spec = api_call_spec("e2e-cli", source.url, timing={"type": "cron", "cron": "0 3 * * *"})
    assert api.post("/api/schedules", json=spec).status_code == 201

    assert api.post("/api/schedules/e2e-cli/pause").json()["paused"] is True
    assert api.post("/api/schedules/e2e-cli/pause").json()["paused"] is True  # idempotent
    inspected = prefect_cli(prefect_api_url, "deployment", "inspect", "api-call/e2e-cli")
    assert re.search(r"'paused': True", inspected.stdout), inspected.stdout + inspected.stderr

    assert api.post("/api/schedules/e2e-cli/resume").json()["paused"] is False
    inspected = prefect_cli(prefect_api_url, "deployment", "inspect", "api-call/e2e-cli")
    assert re.search(r"'paused': False", inspected.stdout), inspected.stdout

    ran = prefect_cli(prefect_api_url, "deployment", "run", "api-call/e2e-cli")
    assert ran.returncode == 0, ran.stderr
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", ran.stdout)
    assert run_id, ran.stdout
    run = wait_for_run(api, run_id[1])
    assert run["state_type"] == "COMPLETED" and run["schedule"] == "e2e-cli"
    assert api.get("/api/records?schedule=e2e-cli").json()["count"] == 3


def test_a_source_failing_twice_with_503_then_answering_stores_once(api, worker, source):
    source.route("/flaky", Reply(503, {"e": 1}), Reply(503, {"e": 2}), Reply(200, PRICES))
    assert (
        api.post(
            "/api/schedules", json=api_call_spec("e2e-flaky", source.url, "/flaky")
        ).status_code
        == 201
    )
    run = wait_for_run(api, api.post("/api/schedules/e2e-flaky/run").json()["flow_run_id"])
    assert run["state_type"] == "COMPLETED", run
    assert source.hits["/flaky"] == 3
    assert api.get("/api/records?schedule=e2e-flaky").json()["count"] == 3


def test_a_source_answering_404_fails_the_run_with_the_status_and_stores_nothing(
    api, worker, source
):
    source.route("/gone", Reply(404, {"error": "not found"}))
    assert (
        api.post("/api/schedules", json=api_call_spec("e2e-404", source.url, "/gone")).status_code
        == 201
    )
    run = wait_for_run(api, api.post("/api/schedules/e2e-404/run").json()["flow_run_id"])
    assert run["state_type"] == "FAILED"
    assert source.hits["/gone"] == 1  # no retry on a 4xx
    assert "HTTP 404" in run["outcome"]["error"]
    assert run["outcome"]["items_succeeded"] == 0
    assert api.get("/api/records?schedule=e2e-404").json()["count"] == 0


def test_delete_removes_the_deployment_but_keeps_records(api, worker, source):
    source.route("/prices", Reply(200, PRICES))
    assert (
        api.post("/api/schedules", json=api_call_spec("e2e-delete", source.url)).status_code == 201
    )
    wait_for_run(api, api.post("/api/schedules/e2e-delete/run").json()["flow_run_id"])
    assert api.delete("/api/schedules/e2e-delete").status_code == 204
    assert api.get("/api/schedules/e2e-delete").status_code == 404
    assert api.get("/api/records?schedule=e2e-delete").json()["count"] == 3


def test_a_flow_retry_after_a_failed_attempt_stores_once(api, worker, source):
    """Flow-level retries come from the schedule (retries=1) and rerun the whole pipeline."""
    source.route("/once-broken", Reply(404, {}), Reply(200, PRICES))
    spec = api_call_spec(
        "e2e-flow-retry", source.url, "/once-broken", retries=1, retry_delay_seconds=0
    )
    assert api.post("/api/schedules", json=spec).status_code == 201
    run = wait_for_run(api, api.post("/api/schedules/e2e-flow-retry/run").json()["flow_run_id"])
    assert run["state_type"] == "COMPLETED", run
    assert source.hits["/once-broken"] == 2
    assert run["outcome"]["error"] is None and run["outcome"]["items_succeeded"] == 3
    assert api.get("/api/records?schedule=e2e-flow-retry").json()["count"] == 3


def test_a_run_request_repeated_with_its_idempotency_key_starts_one_run(api, source):
    assert api.post("/api/schedules", json=api_call_spec("e2e-idem", source.url)).status_code == 201
    headers = {"Idempotency-Key": "deploy-42"}
    first = api.post("/api/schedules/e2e-idem/run", headers=headers).json()["flow_run_id"]
    again = api.post("/api/schedules/e2e-idem/run", headers=headers).json()["flow_run_id"]
    other = api.post("/api/schedules/e2e-idem/run", headers={"Idempotency-Key": "x"}).json()
    assert first == again != other["flow_run_id"]
