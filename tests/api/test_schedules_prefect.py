"""Schedules on a real Prefect server: the runs Prefect plans are at the expected local times,
and every invalid spec is refused with 422 naming the field while Prefect gains nothing."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest

from tests.utils.factories import api_call_spec
from tests.utils.prefect_server import deployment_count, plan_runs, planned_runs
from tests.utils.runs import wait_for_run

PARIS = ZoneInfo("Europe/Paris")
# The last Sunday of March 2027: Paris moves from UTC+1 to UTC+2 at 02:00.
DST_START = datetime(2027, 3, 25, tzinfo=PARIS)
DST_END = datetime(2027, 3, 31, tzinfo=PARIS)


@pytest.mark.parametrize(
    ("timing", "local_times"),
    [
        ({"type": "cron", "cron": "30 9 * * *"}, ["09:30"] * 6),
        ({"type": "daily", "at": "09:30"}, ["09:30"] * 6),
        ({"type": "weekly", "days": ["fri", "mon"], "at": "06:15"}, ["06:15", "06:15"]),
        ({"type": "rrule", "rrule": "FREQ=DAILY;BYHOUR=9;BYMINUTE=30"}, ["09:30"] * 6),
    ],
)
def test_runs_keep_their_local_wall_clock_time_across_dst(
    api, prefect_api_url, timing, local_times
):
    name = f"dst-{timing['type']}"
    spec = api_call_spec(name, "https://example.com", timing={**timing, "timezone": "Europe/Paris"})
    created = api.post("/api/schedules", json=spec)
    assert created.status_code == 201, created.text
    deployment_id = created.json()["deployment_id"]
    plan_runs(prefect_api_url, deployment_id, DST_START, DST_END)
    runs = [r for r in planned_runs(prefect_api_url, deployment_id) if DST_START <= r < DST_END]
    assert [r.astimezone(PARIS).strftime("%H:%M") for r in runs] == local_times
    offsets = {r.astimezone(PARIS).utcoffset() for r in runs}
    assert offsets == {timedelta(hours=1), timedelta(hours=2)}
    assert api.get(f"/api/schedules/{name}").json()["timing"]["type"] == timing["type"]


def test_interval_plans_runs_every_period(api, prefect_api_url):
    spec = api_call_spec(
        "every-90s", "https://example.com", timing={"type": "interval", "every_seconds": 90}
    )
    deployment_id = api.post("/api/schedules", json=spec).json()["deployment_id"]
    start = datetime(2027, 1, 1, tzinfo=UTC)
    plan_runs(prefect_api_url, deployment_id, start, start + timedelta(minutes=6))
    runs = planned_runs(prefect_api_url, deployment_id)[:4]
    assert [(b - a).total_seconds() for a, b in itertools.pairwise(runs)] == [90.0] * 3


def test_manual_has_no_planned_runs(api, prefect_api_url):
    deployment_id = api.post(
        "/api/schedules", json=api_call_spec("manual-only", "https://example.com")
    ).json()["deployment_id"]
    plan_runs(prefect_api_url, deployment_id, DST_START, DST_END)
    assert planned_runs(prefect_api_url, deployment_id) == []
    assert api.get("/api/schedules/manual-only").json()["next_runs"] == []


@pytest.mark.e2e
def test_once_runs_once_at_its_time(api, worker, prefect_api_url):
    from prefect import get_client
    from prefect.client.schemas.objects import State
    from prefect.states import Scheduled

    from tests.utils.http_source import Reply, serve_http_source

    with serve_http_source() as source:
        source.route("/prices", Reply(200, {"data": [{"symbol": "ONE", "quote": {"usd": 1}}]}))
        # An hour ahead, so however slow the machine, the time is still ahead when created.
        at = (datetime.now(UTC) + timedelta(hours=1)).replace(microsecond=0)
        spec = api_call_spec("run-once", source.url, timing={"type": "once", "at": at.isoformat()})
        created = api.post("/api/schedules", json=spec)
        assert created.status_code == 201, created.text
        deployment_id = created.json()["deployment_id"]
        for _ in range(2):  # planning twice must not add a second run
            plan_runs(
                prefect_api_url, deployment_id, at - timedelta(hours=1), at + timedelta(days=400)
            )
        runs = api.get("/api/schedules/run-once/runs", params={"state": "SCHEDULED"}).json()
        assert runs["count"] == 1
        assert datetime.fromisoformat(runs["data"][0]["expected_start_time"]) == at
        # Its time arrives now instead of in an hour: the worker polls for runs whose
        # scheduled time has come, and forcing a new Scheduled state moves that time.
        run_id, due = runs["data"][0]["id"], datetime.now(UTC)
        now_due: State[None] = Scheduled(scheduled_time=due)
        with get_client(sync_client=True) as client:
            moved = client.set_flow_run_state(run_id, now_due, force=True)
        assert moved.status.value == "ACCEPT", moved
        run = wait_for_run(api, run_id)
        assert run["state_type"] == "COMPLETED"
        # Prefect's WaitForScheduledTime rounds the wait to whole seconds: up to 0.5 s early.
        assert datetime.fromisoformat(run["start_time"]) >= due - timedelta(seconds=0.5)
        assert source.hits["/prices"] == 1
        assert api.get("/api/schedules/run-once/runs").json()["count"] == 1


PAST = (datetime.now(UTC) - timedelta(hours=1)).isoformat()


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"timing": {"type": "cron", "cron": "61 * * * *"}}, "cron"),
        ({"timing": {"type": "cron", "cron": "0 9 * * *", "timezone": "Mars/Olympus"}}, "timezone"),
        ({"timing": {"type": "interval", "every_seconds": 0}}, "every_seconds"),
        ({"timing": {"type": "interval", "every_minutes": -5}}, "every_minutes"),
        ({"timing": {"type": "once", "at": PAST}}, "at"),
        ({"timing": {"type": "weekly", "days": [], "at": "07:00"}}, "days"),
        ({"parameters": {"source": {"base_url": "ftp://example.com"}}}, "base_url"),
        ({"parameters": {"source": {"base_url": "file:///etc/passwd"}}}, "base_url"),
        (
            {"parameters": {"source": {"base_url": "https://x.io"}, "extract": {"root": "data[["}}},
            "root",
        ),
        (
            {
                "parameters": {
                    "source": {"base_url": "https://x.io"},
                    "extract": {"fields": {"a": "b.["}},
                }
            },
            "fields",
        ),
        (
            {
                "parameters": {
                    "source": {"base_url": "https://x.io"},
                    "destination": {"table": "drop table;"},
                }
            },
            "table",
        ),
        (
            {
                "parameters": {
                    "source": {"base_url": "https://x.io"},
                    "destination": {"table": "no_such_table"},
                }
            },
            "table",
        ),
        (
            {
                "parameters": {
                    "source": {"base_url": "https://x.io"},
                    "destination": {"table": "run_outcomes"},
                }
            },
            "table",
        ),
        (
            {
                "parameters": {
                    "source": {"base_url": "https://x.io", "headers": {"Authorization": "Bearer x"}}
                }
            },
            "headers",
        ),
        (
            {
                "parameters": {
                    "source": {"base_url": "https://x.io", "headers_secret": "missing-secret"}
                }
            },
            "headers_secret",
        ),
        ({"pipeline": "no_such_pipeline"}, "pipeline"),
        ({"name": "Not A Slug"}, "name"),
    ],
)
def test_invalid_spec_is_refused_with_422_naming_the_field_and_creates_nothing(
    api, prefect_api_url, change, field
):
    before = deployment_count(prefect_api_url)
    spec = {**api_call_spec("bad-spec", "https://example.com"), **change}
    response = api.post("/api/schedules", json=spec)
    assert response.status_code == 422, response.text
    assert any(field in map(str, error["loc"]) for error in response.json()["detail"]), (
        response.json()
    )
    assert deployment_count(prefect_api_url) == before
    assert api.get("/api/schedules/bad-spec").status_code == 404


def test_a_duplicate_name_is_refused_with_409(api, prefect_api_url):
    spec = api_call_spec("dupe-name", "https://example.com")
    assert api.post("/api/schedules", json=spec).status_code == 201
    before = deployment_count(prefect_api_url)
    response = api.post("/api/schedules", json={**spec, "description": "another"})
    assert response.status_code == 409 and "dupe-name" in response.json()["detail"]
    assert deployment_count(prefect_api_url) == before
    assert api.get("/api/schedules/dupe-name").json()["description"] == ""
    # Prefect's UI shows what it does instead of nothing (our API answers the user's "").
    (stored,) = httpx.post(
        f"{prefect_api_url}/deployments/filter",
        json={"deployments": {"name": {"any_": ["dupe-name"]}}},
    ).json()
    assert stored["description"].startswith("GET https://example.com/"), stored["description"]


def test_patch_changes_timing_in_place_and_keeps_pause(api, prefect_api_url):
    spec = api_call_spec("patch-me", "https://example.com", timing={"type": "daily", "at": "08:00"})
    assert api.post("/api/schedules", json=spec).status_code == 201
    api.post("/api/schedules/patch-me/pause")
    patched = api.patch(
        "/api/schedules/patch-me",
        json={"timing": {"type": "cron", "cron": "*/10 * * * *"}, "retries": 2},
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert body["timing"] == {"type": "cron", "cron": "*/10 * * * *", "timezone": "UTC"}
    assert body["paused"] is True and body["retries"] == 2
    bad = api.patch("/api/schedules/patch-me", json={"timing": {"type": "cron", "cron": "nope"}})
    assert bad.status_code == 422
    assert api.get("/api/schedules/patch-me").json()["timing"]["cron"] == "*/10 * * * *"


def test_list_filters_and_pages(api):
    for i in range(3):
        api.post(
            "/api/schedules",
            json={**api_call_spec(f"list-{i}", "https://example.com"), "tags": ["team:list"]},
        )
    api.post("/api/schedules/list-1/pause")
    page = api.get("/api/schedules", params={"tag": "team:list", "limit": 2}).json()
    assert page["count"] == 3 and [s["name"] for s in page["data"]] == ["list-0", "list-1"]
    # Whole pages come from Prefect's paginate call, other offsets from filter + count.
    for offset, names in [(2, ["list-2"]), (1, ["list-1", "list-2"]), (3, []), (4, [])]:
        params = {"tag": "team:list", "limit": 2, "offset": offset}
        page = api.get("/api/schedules", params=params).json()
        assert page["count"] == 3 and [s["name"] for s in page["data"]] == names, offset
    # A page larger than Prefect's is asked for in parts (Prefect's page made 2 here).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr("deployments.prefect_api.PREFECT_PAGE", 2)
        for offset, names in [(0, ["list-0", "list-1", "list-2"]), (1, ["list-1", "list-2"])]:
            params = {"tag": "team:list", "limit": 5, "offset": offset}
            page = api.get("/api/schedules", params=params).json()
            assert page["count"] == 3 and [s["name"] for s in page["data"]] == names, offset
    widest = api.get("/api/schedules", params={"tag": "team:list", "limit": 500})
    assert widest.status_code == 200 and widest.json()["count"] == 3
    paused = api.get("/api/schedules", params={"tag": "team:list", "paused": True}).json()
    assert [s["name"] for s in paused["data"]] == ["list-1"]
    assert api.get("/api/schedules", params={"pipeline": "nope"}).json() == {
        "data": [],
        "count": 0,
        "unreadable": [],
    }


def test_unknown_schedule_and_run_are_404(api):
    assert api.post("/api/schedules/nope/run").status_code == 404
    assert api.get("/api/runs/00000000-0000-0000-0000-000000000000").status_code == 404
    health = api.get("/health").json()
    assert health == {"status": "ok", "database": "ok", "prefect": "ok", "worker": health["worker"]}
