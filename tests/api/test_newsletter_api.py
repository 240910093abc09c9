"""The newsletter scheduler's ten endpoints, the workspace routes, bad input and isolation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.main import create_app
from db.newsletter import save_newsletter
from settings import Settings, get_settings
from tests.utils.prefect_server import deployment_count

# The seed's first use case, verbatim (plus the workspace it belongs to).
DAILY_AI_DIGEST = {
    "name": "Daily AI Digest",
    "schedule_type": "daily",
    "schedule_time": "08:00",
    "timezone": "America/New_York",
    "actions": ["scrape", "generate", "send"],
    "config": {"max_items": 10, "days_back": 1, "sources": ["reddit", "rss"]},
}
WEEKLY_ROUNDUP = {
    "name": "Weekly AI Roundup",
    "schedule_type": "weekly",
    "schedule_days": ["monday"],
    "schedule_time": "10:00",
    "timezone": "UTC",
    "actions": ["scrape", "generate", "send"],
    "config": {"max_items": 20, "days_back": 7, "tone": "professional"},
}


def workspace() -> str:
    return f"ws-{uuid.uuid4().hex[:8]}"


def create(api: TestClient, ws: str, job: dict[str, Any], **headers: str) -> dict[str, Any]:
    answer = api.post("/api/v1/scheduler", json={**job, "workspace_id": ws}, headers=headers)
    assert answer.status_code == 201, answer.text
    body = answer.json()
    assert body["success"] is True
    data: dict[str, Any] = body["data"]
    return data


def test_the_daily_ai_digest_plans_its_run_at_eight_in_new_york(api: TestClient):
    job = create(api, workspace(), DAILY_AI_DIGEST)
    assert (job["schedule_type"], job["schedule_time"], job["timezone"]) == (
        "daily",
        "08:00",
        "America/New_York",
    )
    assert (job["status"], job["is_enabled"], job["total_runs"]) == ("active", True, 0)
    next_run = datetime.fromisoformat(job["next_run_at"])
    local = next_run.astimezone(ZoneInfo("America/New_York"))
    assert (local.hour, local.minute) == (8, 0)
    # 13:00 UTC in winter (EST), 12:00 in summer (EDT).
    offset = local.utcoffset()
    assert next_run.astimezone(UTC).hour == (13 if offset == timedelta(hours=-5) else 12)
    assert timedelta(0) < next_run - datetime.now(UTC) <= timedelta(days=1)


def test_jobs_are_listed_read_changed_paused_resumed_and_deleted(api: TestClient):
    ws = workspace()
    daily = create(api, ws, DAILY_AI_DIGEST)
    weekly = create(api, ws, WEEKLY_ROUNDUP)
    create(api, workspace(), DAILY_AI_DIGEST)  # another workspace's
    listed = api.get(f"/api/v1/scheduler/workspaces/{ws}").json()["data"]
    assert listed["total"] == 2
    assert {j["name"] for j in listed["jobs"]} == {"Daily AI Digest", "Weekly AI Roundup"}
    got = api.get(f"/api/v1/scheduler/{weekly['id']}").json()["data"]
    assert (got["schedule_days"], got["schedule_time"]) == (["monday"], "10:00")
    assert datetime.fromisoformat(got["next_run_at"]).weekday() == 0

    changed = api.put(
        f"/api/v1/scheduler/{daily['id']}",
        json={"schedule_type": "cron", "cron_expression": "30 6 * * 1-5", "name": "Weekday AI"},
    )
    assert changed.status_code == 200, changed.text
    data = changed.json()["data"]
    assert (data["schedule_type"], data["cron_expression"], data["name"]) == (
        "cron",
        "30 6 * * 1-5",
        "Weekday AI",
    )
    assert data["timezone"] == "America/New_York"  # kept
    assert data["id"] == daily["id"]

    paused = api.post(f"/api/v1/scheduler/{daily['id']}/pause").json()["data"]
    assert (paused["status"], paused["is_enabled"], paused["next_run_at"]) == (
        "paused",
        False,
        None,
    )
    resumed = api.post(f"/api/v1/scheduler/{daily['id']}/resume").json()["data"]
    assert (resumed["status"], resumed["next_run_at"] is not None) == ("active", True)
    custom = api.put(
        f"/api/v1/scheduler/{daily['id']}",
        json={"schedule_type": "custom", "rrule": "FREQ=MONTHLY;BYMONTHDAY=1;BYHOUR=9;BYMINUTE=0"},
    ).json()["data"]
    assert custom["schedule_type"] == "custom"
    assert datetime.fromisoformat(custom["next_run_at"]).day == 1

    assert api.delete(f"/api/v1/scheduler/{daily['id']}").json()["success"] is True
    assert api.get(f"/api/v1/scheduler/{daily['id']}").status_code == 404
    stats = api.get(f"/api/v1/scheduler/{weekly['id']}/stats").json()["data"]
    assert (stats["total_executions"], stats["success_rate"]) == (0, None)
    assert api.get(f"/api/v1/scheduler/{weekly['id']}/history").json()["data"] == {
        "executions": [],
        "total": 0,
    }


BAD_JOBS = [
    ({"actions": ["scrape", "publish"]}, "actions"),
    ({"schedule_type": "weekly", "schedule_days": None}, "schedule_days"),
    ({"schedule_type": "weekly", "schedule_days": ["funday"]}, "schedule_days"),
    ({"schedule_time": "25:00"}, "schedule_time"),
    ({"timezone": "Mars/Olympus_Mons"}, "timezone"),
    ({"schedule_type": "cron", "cron_expression": "61 * * * *"}, "cron_expression"),
    ({"schedule_type": "custom", "rrule": "FREQ=SOMETIMES"}, "rrule"),
    ({"config": {"test_recipients": ["not-an-address"]}}, "config"),
    ({"config": {"max_items": 0}}, "config"),
    ({"config": {"smtp_server": "no-such-block"}}, "config"),
    ({"config": {"rate_limit": "no-such-limit"}}, "config"),
    ({"actions": ["generate", "send"]}, "actions"),
]


@pytest.mark.parametrize(("change", "field"), BAD_JOBS)
def test_a_bad_job_is_a_422_naming_the_field_and_nothing_is_created(
    api: TestClient, prefect_api_url: str, change: dict[str, Any], field: str
):
    before = deployment_count(prefect_api_url)
    answer = api.post(
        "/api/v1/scheduler", json={**DAILY_AI_DIGEST, **change, "workspace_id": workspace()}
    )
    assert answer.status_code == 422, answer.text
    assert any(e["loc"][1] == field for e in answer.json()["detail"]), answer.json()
    assert deployment_count(prefect_api_url) == before


def test_a_bad_update_changes_nothing(api: TestClient):
    job = create(api, workspace(), DAILY_AI_DIGEST)
    answer = api.put(f"/api/v1/scheduler/{job['id']}", json={"schedule_time": "24:00"})
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["body", "schedule_time"]
    assert api.get(f"/api/v1/scheduler/{job['id']}").json()["data"]["schedule_time"] == "08:00"


BAD_SOURCES = [
    {"type": "rss", "url": "ftp://example.test/feed.xml"},
    {"type": "rss", "url": "file:///etc/passwd"},
    {"type": "html", "url": "javascript:alert(1)", "item_selector": "li"},
    {"type": "reddit", "subreddit": "no spaces allowed"},
    {"type": "podcast", "url": "https://example.test"},
]


@pytest.mark.parametrize("source", BAD_SOURCES)
def test_a_bad_source_is_refused_and_the_list_is_unchanged(api: TestClient, source: dict[str, Any]):
    ws = workspace()
    good = [{"type": "rss", "url": "https://example.test/feed.xml"}]
    assert api.put(f"/api/v1/workspaces/{ws}/sources", json={"sources": good}).status_code == 200
    answer = api.put(f"/api/v1/workspaces/{ws}/sources", json={"sources": [source]})
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][:3] == ["body", "sources", 0]
    assert api.get(f"/api/v1/workspaces/{ws}/sources").json()["data"] == good


def test_subscribers_are_upserted_validated_and_paged(api: TestClient):
    ws = workspace()
    people = [{"email": f"Reader{i:02}@example.com", "name": f"R{i}"} for i in range(30)]
    answer = api.put(f"/api/v1/workspaces/{ws}/subscribers", json={"subscribers": people})
    assert answer.json()["data"] == {"upserted": 30}
    again = [{"email": "reader00@example.com", "status": "unsubscribed"}]
    api.put(f"/api/v1/workspaces/{ws}/subscribers", json={"subscribers": again})
    page = api.get(f"/api/v1/workspaces/{ws}/subscribers", params={"limit": 10, "offset": 0})
    body = page.json()
    assert (body["count"], len(body["data"])) == (30, 10)
    assert body["data"][0]["email"] == "reader00@example.com"
    assert body["data"][0]["status"] == "unsubscribed"
    active = api.get(f"/api/v1/workspaces/{ws}/subscribers", params={"status": "active"})
    assert active.json()["count"] == 29
    bad = api.put(
        f"/api/v1/workspaces/{ws}/subscribers",
        json={"subscribers": [{"email": "ok@example.com"}, {"email": "nope"}]},
    )
    assert bad.status_code == 422
    assert bad.json()["detail"][0]["loc"] == ["body", "subscribers", 1, "email"]
    assert api.get(f"/api/v1/workspaces/{ws}/subscribers").json()["count"] == 30


# -- workspace isolation ----------------------------------------------------------------------

KEYS = {"admin": "admin-key", "a": "key-of-a", "b": "key-of-b"}


@pytest.fixture(scope="module")
def keyed(prefect_api_url: str, work_pool: str, sqlite_engine: Engine) -> Iterator[TestClient]:
    """The API with an admin key and two keys bound to one workspace each."""
    app = create_app(sqlite_engine)
    settings = Settings(
        api_keys=KEYS["admin"],
        workspace_keys=f'{{"{KEYS["a"]}": ["ws-a"], "{KEYS["b"]}": ["ws-b"]}}',
    )
    app.dependency_overrides[get_settings] = lambda: settings
    with TestClient(app, base_url="http://127.0.0.1") as client:
        yield client


def bearer(who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {KEYS[who]}"}


def test_a_workspace_key_reaches_only_its_workspaces(keyed: TestClient, prefect_api_url: str):
    """Every route refuses another workspace: its job is a 404, listing or writing it a 403."""
    as_b = bearer("b")
    job_b = create(keyed, "ws-b", DAILY_AI_DIGEST, **as_b)
    for ws in ("ws-a", "ws-b"):
        keyed.put(
            f"/api/v1/workspaces/{ws}/subscribers",
            json={"subscribers": [{"email": f"x@{ws}.example.com"}]},
            headers=bearer(ws[-1]),
        )
    as_a = bearer("a")
    job = f"/api/v1/scheduler/{job_b['id']}"
    before = deployment_count(prefect_api_url)
    not_found: list[tuple[str, str, Any]] = [
        ("GET", job, None),
        ("PUT", job, {"schedule_time": "09:00"}),
        ("DELETE", job, None),
        ("POST", f"{job}/pause", None),
        ("POST", f"{job}/resume", None),
        ("POST", f"{job}/run-now", {"test_mode": True}),
        ("GET", f"{job}/history", None),
        ("GET", f"{job}/stats", None),
    ]
    for method, path, body in not_found:
        answer = keyed.request(method, path, json=body, headers=as_a)
        assert answer.status_code == 404, (method, path, answer.text)
    forbidden: list[tuple[str, str, Any]] = [
        ("POST", "/api/v1/scheduler", {**DAILY_AI_DIGEST, "workspace_id": "ws-b"}),
        ("GET", "/api/v1/scheduler/workspaces/ws-b", None),
        ("GET", "/api/v1/workspaces/ws-b/sources", None),
        ("PUT", "/api/v1/workspaces/ws-b/sources", {"sources": []}),
        ("GET", "/api/v1/workspaces/ws-b/subscribers", None),
        ("PUT", "/api/v1/workspaces/ws-b/subscribers", {"subscribers": []}),
        ("GET", "/api/newsletters?workspace_id=ws-b", None),
        ("GET", "/api/schedules", None),  # an admin route
        ("GET", "/api/jobs", None),
    ]
    for method, path, body in forbidden:
        answer = keyed.request(method, path, json=body, headers=as_a)
        assert answer.status_code == 403, (method, path, answer.text)
    assert deployment_count(prefect_api_url) == before
    # What b sees of its own, and the admin of both.
    assert keyed.get(job, headers=as_b).status_code == 200
    assert keyed.get(job, headers=bearer("admin")).status_code == 200
    subscribers = keyed.get("/api/v1/workspaces/ws-b/subscribers", headers=as_b).json()
    assert [s["email"] for s in subscribers["data"]] == ["x@ws-b.example.com"]
    assert keyed.get("/api/v1/scheduler/workspaces/ws-a", headers=as_a).status_code == 200
    assert keyed.get("/api/v1/scheduler/workspaces/ws-a").status_code == 401
    assert (
        keyed.get(
            "/api/v1/scheduler/workspaces/ws-a", headers={"Authorization": "Bearer x"}
        ).status_code
        == 401
    )
    assert keyed.get("/api/schedules", headers=bearer("admin")).status_code == 200


def test_a_workspace_key_reads_only_its_workspaces_newsletters(
    keyed: TestClient, sqlite_engine: Engine
):
    with sqlite_engine.begin() as conn:
        issue = {"job_id": None, "job_name": "J", "subject": "S", "html": "h", "text": "t"}
        ids = {
            ws: save_newsletter(
                conn,
                {**issue, "flow_run_id": uuid.uuid4(), "workspace_id": ws, "test_mode": True},
                [],
            )
            for ws in ("ws-a", "ws-b")
        }
    as_a = bearer("a")
    assert keyed.get(f"/api/newsletters/{ids['ws-b']}", headers=as_a).status_code == 404
    mine = keyed.get(f"/api/newsletters/{ids['ws-a']}", headers=as_a)
    assert mine.status_code == 200
    assert mine.json()["data"]["delivery_counts"]["sent"] == 0
    listed = keyed.get("/api/newsletters", headers=as_a).json()["data"]
    assert {n["workspace_id"] for n in listed} == {"ws-a"}
    assert keyed.get(f"/api/newsletters/{ids['ws-b']}", headers=bearer("admin")).status_code == 200
