"""One bad request breaks nothing (issue items 5, 8, 9, 10, 14): out-of-range datetimes are
refused before anything is created, a list shows the rest when one deployment is unreadable,
a dependency that is down answers 503 with Retry-After within a bounded time, a schedule
deleted under a resume is a 404, and run-now is one Prefect call whose Idempotency-Key
cannot be reused for other parameters."""

from __future__ import annotations

import socket
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prefect.settings import PREFECT_API_URL, temporary_settings

from api.main import create_app
from db.engine import create_db_engine
from deployments.service import ScheduleService
from settings import Settings, get_settings
from tests.utils.factories import api_call_spec
from tests.utils.prefect_server import deployment_count


@pytest.mark.parametrize(
    "timing",
    [
        {"type": "interval", "every_minutes": 5, "anchor": "0001-01-01T00:00:00"},
        {"type": "interval", "every_minutes": 5, "anchor": "9999-12-31T23:59:59-23:59"},
        {"type": "interval", "every_minutes": 10**12},
        {"type": "once", "at": "9999-12-31T23:00:00"},
    ],
)
def test_a_datetime_out_of_range_is_refused_and_creates_nothing(api, prefect_api_url, timing):
    before = deployment_count(prefect_api_url)
    spec = api_call_spec("far-away", "https://example.com")
    spec["timing"] = {**timing, "timezone": "America/New_York"}
    response = api.post("/api/schedules", json=spec)
    assert response.status_code == 422, response.text
    assert any("timing" in map(str, e["loc"]) for e in response.json()["detail"])
    assert deployment_count(prefect_api_url) == before
    assert api.get("/api/schedules").status_code == 200


def test_one_unreadable_deployment_leaves_the_list_to_the_others(api, prefect_api_url):
    assert api.post("/api/schedules", json=api_call_spec("readable", "https://x.io")).status_code
    flow = httpx.post(f"{prefect_api_url}/flows/", json={"name": "api-call"}).json()
    anchored = {
        "interval": 300,
        "anchor_date": "0001-01-01T00:00:00",
        "timezone": "America/New_York",
    }
    broken = httpx.post(  # ours by flow and tag, made outside our API (which refuses it)
        f"{prefect_api_url}/deployments/",
        json={
            "name": "unreadable",
            "flow_id": flow["id"],
            "tags": ["pipeline:api_call"],
            "schedules": [{"schedule": anchored, "slug": "interval", "active": False}],
        },
    )
    assert broken.status_code in (200, 201), broken.text
    try:
        listed = api.get("/api/schedules", params={"limit": 500})
        assert listed.status_code == 200, listed.text
        body = listed.json()
        names = [s["name"] for s in body["data"]]
        assert "readable" in names and "unreadable" not in names
        assert [u["name"] for u in body["unreadable"]] == ["unreadable"]
        jobs = api.get("/api/jobs")
        assert jobs.status_code == 200
    finally:
        httpx.delete(f"{prefect_api_url}/deployments/{broken.json()['id']}")
        api.delete("/api/schedules/readable")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts connections and never answers (a hung dependency)."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(64)
        yield listener.getsockname()[1]


@pytest.mark.parametrize("hang", [False, True])
def test_prefect_down_answers_503_with_retry_after_within_the_deadline(
    sqlite_engine, silent_port, hang
):
    dead = f"http://127.0.0.1:{silent_port if hang else 9}/api"
    app = create_app(sqlite_engine)
    app.dependency_overrides[get_settings] = lambda: Settings(request_deadline_seconds=2)
    with (
        temporary_settings({PREFECT_API_URL: dead}),
        TestClient(app, base_url="http://127.0.0.1") as client,
    ):
        for method, path in [("GET", "/api/schedules"), ("POST", "/api/schedules/x/run")]:
            started = time.monotonic()
            response = client.request(method, path)
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"].isdigit()
            assert time.monotonic() - started < 12
        assert client.get("/health").status_code in (200, 503)


def test_our_database_down_answers_503_with_retry_after(prefect_api_url):
    down = create_db_engine("postgresql://postgres@127.0.0.1:9/nowhere")
    with TestClient(create_app(down), base_url="http://127.0.0.1") as client:
        for method, path, body in [
            ("GET", "/api/records", None),
            ("PUT", "/api/users", [{"uid": "u1", "context": "c"}]),
        ]:
            response = client.request(method, path, json=body)
            assert response.status_code == 503, response.text
            assert "database" in response.json()["detail"]
            assert "Retry-After" in response.headers


@pytest.mark.parametrize("action", ["resume", "pause"])
def test_a_schedule_deleted_under_a_resume_or_pause_is_a_404(api, monkeypatch, action):
    assert api.post("/api/schedules", json=api_call_spec("racing", "https://x.io")).status_code
    read = ScheduleService._get

    async def read_then_lose_it(self: ScheduleService, name: str) -> Any:
        found = await read(self, name)
        await self.client.delete_deployment(found[0].id)  # a DELETE lands in between
        return found

    monkeypatch.setattr(ScheduleService, "_get", read_then_lose_it)
    response = api.post(f"/api/schedules/racing/{action}")
    assert response.status_code == 404, response.text
    monkeypatch.undo()
    assert api.get("/api/schedules/racing").status_code == 404


def test_run_now_is_one_prefect_call_and_a_key_reused_with_other_parameters_is_409(
    api, monkeypatch
):
    name = f"idem-{uuid.uuid4().hex[:6]}"
    assert api.post("/api/schedules", json=api_call_spec(name, "https://x.io")).status_code == 201
    first = api.post(f"/api/schedules/{name}/run")
    assert first.status_code == 202
    calls: list[str] = []
    seen: set[int] = set()
    original = httpx.AsyncClient.send

    async def counted(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> Any:
        if id(request) not in seen:  # Prefect's client passes a request down more than once
            seen.add(id(request))
            calls.append(f"{request.method} {request.url.path}")
        return await original(self, request, **kwargs)

    monkeypatch.setattr(httpx.AsyncClient, "send", counted)
    again = api.post(f"/api/schedules/{name}/run", headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 202
    assert len(calls) == 1 and calls[0].endswith("/create_flow_run"), calls
    monkeypatch.undo()

    same = api.post(f"/api/schedules/{name}/run", headers={"Idempotency-Key": "k-1"})
    assert same.json()["flow_run_id"] == again.json()["flow_run_id"]
    other = {"parameters": {"request": {"timeout_seconds": 7}}}
    conflict = api.post(
        f"/api/schedules/{name}/run", headers={"Idempotency-Key": "k-1"}, json=other
    )
    assert conflict.status_code == 409, conflict.text
    assert "Idempotency-Key" in conflict.json()["detail"]
    with_params = api.post(
        f"/api/schedules/{name}/run", headers={"Idempotency-Key": "k-2"}, json=other
    )
    assert with_params.status_code == 202
    repeated = api.post(
        f"/api/schedules/{name}/run", headers={"Idempotency-Key": "k-2"}, json=other
    )
    assert repeated.json()["flow_run_id"] == with_params.json()["flow_run_id"]
    api.delete(f"/api/schedules/{name}")


def test_parameters_larger_than_prefect_stores_are_a_422_naming_them(api, prefect_api_url):
    before = deployment_count(prefect_api_url)
    spec = api_call_spec("too-big", "https://x.io")
    spec["parameters"]["extract"]["fields"] = {f"f{i}": "x" * 600 for i in range(1000)}
    response = api.post("/api/schedules", json=spec)
    assert response.status_code == 422, response.text
    (error,) = response.json()["detail"]
    assert error["loc"][-1] == "parameters" and "Prefect stores at most" in error["msg"]
    assert deployment_count(prefect_api_url) == before
    assert api.post("/api/schedules", json=api_call_spec("big-run", "https://x.io")).status_code
    big = {"parameters": {"extract": {"fields": {f"f{i}": "x" * 600 for i in range(1000)}}}}
    assert api.post("/api/schedules/big-run/run", json=big).status_code == 422
    api.delete("/api/schedules/big-run")
