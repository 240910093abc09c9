"""The crew scheduler over HTTP: its curl examples end to end, and bad input refused."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.utils.prefect_server import deployment_count
from tests.utils.runs import wait_for_run

CREW_SCHEDULER_KEYS = {
    "id",
    "userUid",
    "requestContext",
    "requestGoal",
    "responseData",
    "createdAt",
}


def users(n: int = 50, without: int = 10) -> list[dict[str, Any]]:
    """`n` users, the first `without` of them with neither context nor goal."""
    return [
        {"uid": f"crew-{i:03d}"}
        if i < without
        else {"uid": f"crew-{i:03d}", "context": f"Business {i}", "goal": "Rapid growth"}
        for i in range(n)
    ]


def deployment(api_url: str, name: str) -> dict[str, Any]:
    response = httpx.get(f"{api_url}/deployments/name/crew-responses/{name}")
    response.raise_for_status()
    return dict(response.json())


@pytest.mark.e2e
def test_the_crew_schedulers_curl_examples_against_prefect_and_a_worker(
    api, worker, crew, prefect_api_url, sqlite_engine
):
    with sqlite_engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM crew_responses")
        conn.exec_driver_sql("DELETE FROM users")
    assert api.put("/api/users", json=users()).json() == {"success": True, "count": 50}

    status = api.get("/api/scheduler").json()
    assert status == {
        "success": True,
        "message": None,
        "data": {"isRunning": False, "intervalMinutes": 60, "apiUrl": crew.url},
    }

    # curl -X POST /api/scheduler -d '{"action": "start", "intervalMinutes": 15}'
    started = api.post("/api/scheduler", json={"action": "start", "intervalMinutes": 15})
    assert started.status_code == 200, started.text
    assert started.json() == {
        "success": True,
        "message": "Scheduler started with interval: 15 minutes",
        "data": {"isRunning": True, "intervalMinutes": 15, "apiUrl": crew.url},
    }
    in_prefect = deployment(prefect_api_url, "crew-scheduler")
    assert not in_prefect["paused"]
    assert [s["schedule"]["interval"] for s in in_prefect["schedules"]] == [900.0]
    assert [s["active"] for s in in_prefect["schedules"]] == [True]

    # curl /api/scheduler
    assert api.get("/api/scheduler").json()["data"]["isRunning"] is True

    # curl -X POST /api/scheduler -d '{"action": "run-now"}'
    ran = api.post("/api/scheduler", json={"action": "run-now"}).json()
    assert ran["success"] is True and ran["message"] == "Scheduler task executed manually"
    assert wait_for_run(api, ran["data"]["flowRunId"])["state_type"] == "COMPLETED"

    # curl "/api/crew-responses?userUid=crew-042"
    one = api.get("/api/crew-responses", params={"userUid": "crew-042"}).json()
    assert one["success"] is True and one["count"] == 1
    row = one["data"][0]
    assert set(row) >= CREW_SCHEDULER_KEYS
    assert (row["userUid"], row["requestContext"], row["requestGoal"], row["status"]) == (
        "crew-042",
        "Business 42",
        "Rapid growth",
        "succeeded",
    )
    assert row["responseData"]["received"] == {
        "customer_business_background_latest": "Business 42",
        "customer_goal_latest": "Rapid growth",
    }
    every = api.get("/api/crew-responses").json()
    assert every["count"] == 40 and len({r["userUid"] for r in every["data"]}) == 40

    # curl -X POST /api/scheduler -d '{"action": "stop"}'
    stopped = api.post("/api/scheduler", json={"action": "stop"}).json()
    assert stopped == {
        "success": True,
        "message": "Scheduler stopped",
        "data": {"isRunning": False, "intervalMinutes": 15, "apiUrl": crew.url},
    }
    assert deployment(prefect_api_url, "crew-scheduler")["paused"] is True

    # GET and DELETE /api/crew-responses/[id]
    got = api.get(f"/api/crew-responses/{row['id']}").json()
    assert got["success"] is True and got["data"]["userUid"] == "crew-042"
    assert api.delete(f"/api/crew-responses/{row['id']}").json()["success"] is True
    gone = api.get(f"/api/crew-responses/{row['id']}")
    assert gone.status_code == 404 and gone.json()["success"] is False


def locs(response: httpx.Response) -> list[list[Any]]:
    return [e["loc"] for e in response.json()["detail"]]


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"action": "start", "intervalMinutes": 0}, ["body", "intervalMinutes"]),
        ({"action": "start", "intervalMinutes": -5}, ["body", "intervalMinutes"]),
        ({"action": "start", "intervalMinutes": "often"}, ["body", "intervalMinutes"]),
        ({"action": "start", "intervalMinutes": 1.5}, ["body", "intervalMinutes"]),
        ({"action": "restart"}, ["body", "action"]),
        ({}, ["body", "action"]),
    ],
)
def test_bad_scheduler_actions_are_refused_and_change_nothing(api, prefect_api_url, body, loc):
    before, count = api.get("/api/scheduler").json(), deployment_count(prefect_api_url)
    response = api.post("/api/scheduler", json=body)
    assert response.status_code == 422 and loc in locs(response)
    assert api.get("/api/scheduler").json() == before
    assert deployment_count(prefect_api_url) == count


@pytest.mark.parametrize(
    ("params", "loc"),
    [
        ({"limit": 100_000}, ["query", "limit"]),
        ({"limit": 0}, ["query", "limit"]),
        ({"offset": -1}, ["query", "offset"]),
        ({"startDate": "yesterday"}, ["query", "startDate"]),
        ({"endDate": "2025-13-01"}, ["query", "endDate"]),
        ({"startDate": "2025-11-02", "endDate": "2025-11-01"}, ["query", "endDate"]),
        ({"offset": 9223372036854775808}, ["query", "offset"]),
        ({"offset": 2**31}, ["query", "offset"]),
        ({"startDate": "9999-12-31T23:59:59-23:59"}, ["query", "startDate"]),
        ({"endDate": "0001-01-01T00:00:00+23:59"}, ["query", "endDate"]),
    ],
)
def test_bad_response_queries_name_the_parameter(api, params, loc):
    response = api.get("/api/crew-responses", params=params)
    assert response.status_code == 422 and loc in locs(response)


def test_dates_are_read_as_iso_8601_like_the_crew_scheduler(api, sqlite_engine):
    """As JavaScript's Date reads them: a bare date is midnight UTC; bounds are inclusive."""
    import uuid
    from datetime import UTC, datetime

    from db.crew import upsert_crew_responses

    times = ["2025-10-31T23:59:59", "2025-11-01T00:00:00", "2025-11-01T10:30:00", "2025-11-02"]
    run_id = uuid.uuid4()
    with sqlite_engine.begin() as conn:
        conn.exec_driver_sql("DELETE FROM crew_responses")
        upsert_crew_responses(
            conn,
            [
                {
                    "user_uid": f"dated-{i}",
                    "request_context": "c",
                    "request_goal": "g",
                    "response_data": {},
                    "created_at": datetime.fromisoformat(at).replace(tzinfo=UTC),
                    "flow_run_id": run_id,
                    "status": "succeeded",
                    "error": None,
                }
                for i, at in enumerate(times)
            ],
        )

    def uids(**params: str) -> set[str]:
        answer = api.get("/api/crew-responses", params=params)
        assert answer.status_code == 200, answer.text
        return {row["userUid"] for row in answer.json()["data"]}

    assert uids(startDate="2025-11-01") == {"dated-1", "dated-2", "dated-3"}
    assert uids(endDate="2025-11-01T10:30:00.000Z") == {"dated-0", "dated-1", "dated-2"}
    assert uids(startDate="2025-11-01T11:30:00+01:00") == {"dated-2", "dated-3"}


def test_a_missing_or_malformed_id_is_a_clear_4xx(api):
    assert api.get("/api/crew-responses/987654").status_code == 404
    assert api.delete("/api/crew-responses/987654").json() == {
        "success": False,
        "error": "Crew response 987654 not found",
        "detail": "Crew response 987654 not found",
    }
    assert api.get("/api/crew-responses/abc").status_code == 422
    for too_big in ("9223372036854775808", "0", "-1"):
        for method in (api.get, api.delete):
            response = method(f"/api/crew-responses/{too_big}")
            assert response.status_code == 422 and ["path", "response_id"] in locs(response)


@pytest.mark.parametrize(
    "path", ["/api/records", "/api/jobs", "/api/schedules", "/api/crew-responses"]
)
def test_an_offset_past_any_page_is_refused_not_a_server_error(api, path):
    response = api.get(path, params={"offset": "9223372036854775808"})
    assert response.status_code == 422 and ["query", "offset"] in locs(response)
    assert api.get(path, params={"offset": 2**31 - 1}).status_code == 200


def test_bad_users_are_refused_and_none_is_stored(api, sqlite_engine):
    def stored() -> int:
        with sqlite_engine.connect() as conn:
            return int(conn.exec_driver_sql("SELECT COUNT(*) FROM users").scalar_one())

    count = stored()
    missing_uid = api.put("/api/users", json=[{"uid": "ok"}, {"context": "no uid"}])
    assert missing_uid.status_code == 422 and ["body", 1, "uid"] in locs(missing_uid)
    too_many = api.put("/api/users", json=[{"uid": f"u{i}"} for i in range(10_001)])
    assert too_many.status_code == 422
    assert stored() == count
