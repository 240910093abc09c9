"""The service-job registry on Prefect: register, trigger, history, stats, operators, faults."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from tests.utils.http_source import HttpSource, Reply, serve_http_source
from tests.utils.prefect_cli import prefect_cli
from tests.utils.prefect_server import (
    deployment_count,
    plan_runs,
    planned_runs,
    request_retrying,
)
from tests.utils.runs import wait_for_run
from tests.utils.services import EMAIL_SERVICE_PORT

RESULT = {
    "success": True,
    "itemsProcessed": 10,
    "itemsSucceeded": 9,
    "itemsFailed": 1,
    "metadata": {"batch": 1},
}
# The registry's documented registration example, verbatim.
WEEKLY_DIGEST = {
    "name": "weekly-digest",
    "displayName": "Weekly Digest",
    "description": "Send weekly trending content to users",
    "cronExpression": "0 9 * * 1",
    "enabled": True,
    "jobType": "email",
    "service": "email-service",
    "endpoint": "/api/jobs/weekly-digest",
    "config": {"batchSize": 100, "maxUsers": 10000},
}


@pytest.fixture(scope="module")
def email_service() -> Iterator[HttpSource]:
    with serve_http_source(EMAIL_SERVICE_PORT) as service:
        yield service


def job(name: str, endpoint: str, **extra: Any) -> dict[str, Any]:
    return {**WEEKLY_DIGEST, "name": name, "endpoint": endpoint, **extra}


def contexts(service: HttpSource, path: str) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in service.requests if r["path"] == path]


@pytest.mark.e2e
def test_register_trigger_and_read_history_and_stats(api, worker, email_service):
    email_service.route("/api/jobs/weekly-digest", Reply(200, RESULT))
    registered = api.post("/api/jobs/register", json=WEEKLY_DIGEST)
    assert registered.status_code == 201, registered.text
    body = registered.json()["data"]
    assert (body["cronExpression"], body["enabled"], body["jobType"]) == (
        "0 9 * * 1",
        True,
        "email",
    )
    # Monday 09:00 UTC, from the schedule Prefect stores (its scheduler loop plans the run).
    next_run = datetime.fromisoformat(body["nextRunAt"])
    assert (next_run.weekday(), next_run.hour, next_run.minute, next_run.utcoffset()) == (
        0,
        9,
        0,
        timedelta(0),
    )
    assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(days=7)

    triggered = api.post(
        "/api/jobs/weekly-digest/trigger", json={"triggeredByUser": "ops@example.com"}
    )
    assert triggered.status_code == 202
    execution_id = triggered.json()["executionId"]
    assert wait_for_run(api, execution_id)["state_type"] == "COMPLETED"

    [context] = contexts(email_service, "/api/jobs/weekly-digest")
    assert context == {
        "jobName": "weekly-digest",
        "config": {"batchSize": 100, "maxUsers": 10000},
        "executionId": execution_id,
        "triggeredBy": "manual",
        "triggeredByUser": "ops@example.com",
    }
    [execution] = api.get("/api/jobs/weekly-digest/history").json()["data"]
    assert execution["id"] == execution_id and execution["status"] == "completed"
    assert (execution["itemsProcessed"], execution["itemsSucceeded"], execution["itemsFailed"]) == (
        10,
        9,
        1,
    )
    assert execution["triggeredBy"] == "manual" and execution["durationMs"] > 0
    assert execution["metadata"] == {"batch": 1}
    stats = api.get("/api/jobs/weekly-digest/stats").json()["data"]
    assert (stats["totalRuns"], stats["successfulRuns"], stats["failedRuns"]) == (1, 1, 0)
    assert stats["successRate"] == 1.0
    listed = api.get("/api/jobs").json()
    assert "weekly-digest" in [j["name"] for j in listed["data"]]


@pytest.mark.e2e
def test_re_registering_keeps_disabled_applies_the_new_cron_and_adds_no_runs(api, prefect_api_url):
    assert api.post("/api/jobs/register", json=job("rereg", "/api/jobs/rereg")).status_code == 201
    deployment_id = api.get("/api/schedules/rereg").json()["deployment_id"]
    start = datetime.now(UTC) + timedelta(days=1)
    plan_runs(prefect_api_url, deployment_id, start, start + timedelta(days=30))
    assert api.post("/api/jobs/rereg/disable").json()["data"]["enabled"] is False

    again = api.post(
        "/api/jobs/register", json=job("rereg", "/api/jobs/rereg", cronExpression="30 10 * * 2")
    )
    assert again.status_code == 200
    assert again.json()["data"]["enabled"] is False
    assert again.json()["data"]["cronExpression"] == "30 10 * * 2"
    inspected = prefect_cli(prefect_api_url, "deployment", "inspect", "service-job/rereg").stdout
    assert "30 10 * * 2" in inspected and "'paused': True" in inspected
    assert planned_runs(prefect_api_url, deployment_id) == []

    assert api.post("/api/jobs/rereg/enable").json()["data"]["enabled"] is True
    for _ in range(2):
        api.post(
            "/api/jobs/register", json=job("rereg", "/api/jobs/rereg", cronExpression="30 10 * * 2")
        )
        plan_runs(prefect_api_url, deployment_id, start, start + timedelta(days=30))
    runs = planned_runs(prefect_api_url, deployment_id)
    assert len(runs) in (4, 5) and len(runs) == len(set(runs))
    assert all((r.weekday(), r.hour, r.minute) == (1, 10, 30) for r in runs)


@pytest.mark.e2e
def test_operator_actions_in_prefect_show_in_our_answers(
    api, worker, email_service, prefect_api_url
):
    email_service.route("/api/jobs/ops", Reply(200, RESULT))
    assert api.post("/api/jobs/register", json=job("ops", "/api/jobs/ops")).status_code == 201
    deployment_id = api.get("/api/schedules/ops").json()["deployment_id"]
    [schedule] = httpx.get(f"{prefect_api_url}/deployments/{deployment_id}/schedules").json()
    paused = prefect_cli(
        prefect_api_url, "deployment", "schedule", "pause", "service-job/ops", schedule["id"]
    )
    assert paused.returncode == 0, paused.stdout + paused.stderr
    assert api.get("/api/jobs/ops").json()["data"]["enabled"] is False
    assert api.post("/api/jobs/ops/enable").json()["data"]["enabled"] is True

    ran = prefect_cli(prefect_api_url, "deployment", "run", "service-job/ops")
    run_id = re.search(r"UUID: ([0-9a-f-]{36})", ran.stdout)
    assert run_id, ran.stdout + ran.stderr
    assert wait_for_run(api, run_id[1])["state_type"] == "COMPLETED"
    [execution] = api.get("/api/jobs/ops/history").json()["data"]
    assert execution["triggeredBy"] == "admin"
    assert contexts(email_service, "/api/jobs/ops")[0]["triggeredBy"] == "admin"


@pytest.mark.e2e
def test_failing_services_end_as_failed_runs_with_clear_errors(api, worker, email_service):
    faults = {
        "says-no": (Reply(200, {"success": False, "error": "no recipients"}), "no recipients"),
        "errors": (Reply(500, {"error": "db down"}), "HTTP 500"),
        "garbage": (Reply(200, b"<html>oops</html>"), "malformed JobResult"),
        "hangs": (Reply(200, RESULT, delay=30), "timeout"),
    }
    runs = {}
    for name, (reply, _) in faults.items():
        email_service.route(f"/api/jobs/{name}", reply)
        registration = job(name, f"/api/jobs/{name}", timeoutSeconds=3)
        assert api.post("/api/jobs/register", json=registration).status_code == 201
        runs[name] = api.post(f"/api/jobs/{name}/trigger").json()["executionId"]
    for name, (_, message) in faults.items():
        assert wait_for_run(api, runs[name], timeout=180)["state_type"] == "FAILED", name
        [execution] = api.get(f"/api/jobs/{name}/history").json()["data"]
        assert execution["status"] == "failed"
        assert message in execution["errorMessage"].lower() or message in execution["errorMessage"]
        stats = api.get(f"/api/jobs/{name}/stats").json()["data"]
        assert (stats["totalRuns"], stats["failedRuns"], stats["successRate"]) == (1, 1, 0.0)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"cronExpression": "61 * * * *"}, "cronExpression"),
        ({"cronExpression": "0 9 * * 1", "timezone": "Nowhere/City"}, "timezone"),
        ({"service": "unknown-service"}, "service"),
        ({"endpoint": "api/jobs/no-slash"}, "endpoint"),
        ({"endpoint": "http://evil.example.com/x"}, "endpoint"),
        ({"endpoint": "/../admin"}, "endpoint"),
        ({"endpoint": "/%2e%2e/admin"}, "endpoint"),
        ({"endpoint": "/x@evil.example"}, "endpoint"),
        ({"endpoint": "/x\\..\\admin"}, "endpoint"),
        ({"name": None}, "name"),
    ],
)
def test_bad_registrations_are_refused_naming_the_field_and_create_nothing(
    api, prefect_api_url, change, field
):
    before = deployment_count(prefect_api_url)
    payload = {
        k: v for k, v in {**job("bad-job", "/api/jobs/x"), **change}.items() if v is not None
    }
    response = api.post("/api/jobs/register", json=payload)
    assert response.status_code == 422, response.text
    assert [field] == [e["loc"][-1] for e in response.json()["detail"]], response.json()
    assert deployment_count(prefect_api_url) == before


def test_an_endpoint_outside_the_allow_list_is_refused(api, prefect_api_url, monkeypatch):
    from settings import get_settings

    monkeypatch.setattr(get_settings(), "service_allowlist", "http://10.0.0.1:9/")
    response = api.post("/api/jobs/register", json=job("outside", "/api/jobs/x"))
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "endpoint"]


def test_a_name_taken_by_another_pipeline_is_a_conflict(api, prefect_api_url):
    from tests.utils.factories import api_call_spec

    assert api.post("/api/schedules", json=api_call_spec("taken", "http://127.0.0.1:9")).is_success
    response = api.post("/api/jobs/register", json=job("taken", "/api/jobs/taken"))
    assert response.status_code == 409, response.text
    assert api.get("/api/schedules/taken").json()["pipeline"] == "api_call"
    assert api.delete("/api/schedules/taken").is_success


@pytest.mark.e2e
def test_registering_after_an_operator_deleted_the_flow_recreates_it(api, prefect_api_url):
    """The flow id is cached per process; a flow deleted in Prefect is created again."""
    assert api.post("/api/jobs/register", json=job("reflow", "/api/jobs/reflow")).status_code == 201
    flow = httpx.get(f"{prefect_api_url}/flows/name/service-job").json()
    deleted = request_retrying("DELETE", f"{prefect_api_url}/flows/{flow['id']}")
    assert deleted.status_code == 204
    assert api.get("/api/jobs/reflow").status_code == 404  # its deployments went with it

    again = api.post("/api/jobs/register", json=job("reflow", "/api/jobs/reflow"))
    assert again.status_code == 201, again.text
    assert httpx.get(f"{prefect_api_url}/flows/name/service-job").json()["id"] != flow["id"]
    assert api.get("/api/jobs/reflow").json()["data"]["enabled"] is True


def test_unknown_jobs_are_404(api):
    assert api.post("/api/jobs/nope/trigger").status_code == 404
    assert api.get("/api/jobs/nope/history").status_code == 404
    assert httpx.codes.is_success(api.get("/api/jobs").status_code)
