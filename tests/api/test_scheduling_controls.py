"""The schedule spec's scheduling controls on a real Prefect server and warm worker: priority,
collisions, windows, catch-up, jitter and backfill (deployments/controls.py says who does what).

Runs are made the way Prefect's scheduler makes them (Scheduled at a time, no run-now tag), so
a test can stand for "five runs went Late while no worker ran" by creating them in the past:
the worker meets them exactly as it would after a restart.
"""

from __future__ import annotations

import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prefect import get_client
from prefect.settings import PREFECT_API_URL
from prefect.states import Cancelled, Completed, Running, Scheduled
from prefect.utilities.asyncutils import run_coro_as_sync
from sqlalchemy.engine import Engine
from sqlmodel import Session

from db.crud import get_run_outcomes
from deployments.controls import jitter_offset, next_opening
from deployments.spec import Window
from deployments.work_pool import ensure_work_pool
from tests.utils.factories import api_call_spec
from tests.utils.http_source import PRICES, HttpSource, Reply
from tests.utils.runs import (
    FINAL_STATES,
    create_scheduled_runs,
    flow_run,
    wait_for_run,
    wait_until,
)

pytestmark = pytest.mark.e2e


def create(api: TestClient, spec: dict[str, Any]) -> dict[str, Any]:
    answer = api.post("/api/schedules", json=spec)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def api_call(api: TestClient, source: HttpSource, path: str = "/prices", **fields: Any) -> str:
    name = f"ctl-{uuid.uuid4().hex[:8]}"
    spec = api_call_spec(name, source.url, path, **fields)
    spec["parameters"]["request"].update(timeout_seconds=15, retries=0)
    create(api, spec)
    return name


def run_now(api: TestClient, name: str, **body: Any) -> str:
    answer = api.post(f"/api/schedules/{name}/run", json=body or None)
    assert answer.status_code == 202, answer.text
    return str(answer.json()["flow_run_id"])


def planned_runs(deployment_id: str, times: list[datetime]) -> list[str]:
    """Runs as Prefect's scheduler makes them: Scheduled at each time, no run-now tag."""
    return create_scheduled_runs(str(PREFECT_API_URL.value()), deployment_id, times)


def finished(prefect_api_url: str, run_ids: list[str], timeout: float = 120) -> list[dict]:
    """The runs (in the order of `run_ids`) once all are final; one read of Prefect a second."""
    query = {"flow_runs": {"id": {"any_": run_ids}}, "limit": len(run_ids)}

    def all_final() -> list[dict] | None:
        response = httpx.post(f"{prefect_api_url}/flow_runs/filter", json=query, timeout=30)
        by_id = {r["id"]: r for r in response.json()} if response.is_success else {}
        done = len(by_id) == len(run_ids)
        return (
            [by_id[r] for r in run_ids]
            if done and all(r["state_type"] in FINAL_STATES for r in by_id.values())
            else None
        )

    found: list[dict] = wait_until(all_final, f"{len(run_ids)} runs finishing", timeout, 1.0)
    return found


def window_later(hours: int = 2) -> dict[str, Any]:
    """A one-hour window every day that starts `hours` from now (so excludes now), in UTC."""
    start = datetime.now(UTC) + timedelta(hours=hours)
    return {"from": start.strftime("%H:%M"), "to": (start + timedelta(hours=1)).strftime("%H:%M")}


CONTROLS: dict[str, Any] = {
    "priority": "critical",
    "concurrency_limit": 1,
    "collision": "skip",
    "catchup": {"policy": "latest", "window_seconds": 120},
    "jitter_seconds": 15,
    "retry": {"attempts": 2, "delay_seconds": 5, "backoff": "exponential", "max_delay_seconds": 60},
    "timeout_seconds": 300,
}


def test_controls_work_alike_for_every_pipeline(
    api: TestClient, worker: Any, source: HttpSource, prefect_api_url: str
) -> None:
    """Stored on the Prefect deployment (queue, tags, job variables), read back as given,
    and applied by the worker to api_call, crew and service-job runs alike: a run-now
    outside the windows ends Cancelled with the reason, before any process starts."""
    window = window_later()
    windows: dict[str, Any] = {"allowed": [window], "outside": "skip"}
    specs = {
        "api_call": api_call_spec(f"ctl-{uuid.uuid4().hex[:8]}", source.url),
        "crew": {"name": f"ctl-{uuid.uuid4().hex[:8]}", "pipeline": "crew", "parameters": {}},
        "service_job": {
            "name": f"ctl-{uuid.uuid4().hex[:8]}",
            "pipeline": "service_job",
            "parameters": {"job_name": "x", "service": "email-service", "endpoint": "/api/x"},
        },
    }
    runs = {}
    for pipeline, spec in specs.items():
        view = create(api, {**spec, **CONTROLS, "windows": windows})
        assert (view["priority"], view["collision"], view["jitter_seconds"]) == (
            "critical",
            "skip",
            15,
        )
        assert (view["retries"], view["retry_delay_seconds"]) == (2, 5)
        assert (view["retry_backoff"], view["retry_max_delay_seconds"]) == ("exponential", 60)
        assert view["timeout_seconds"] == 300 and view["catchup"] == CONTROLS["catchup"]
        assert view["windows"]["allowed"][0]["from"] == window["from"]
        assert api.get(f"/api/schedules/{spec['name']}").json() == view | {"last_run": None}
        deployment = api_get(prefect_api_url, f"/deployments/{view['deployment_id']}")
        assert deployment["work_queue_name"] == "critical"
        assert "collision:skip" in deployment["tags"] and "collision:skip" not in view["tags"]
        assert deployment["concurrency_options"]["collision_strategy"] == "CANCEL_NEW"
        assert deployment["job_variables"]["controls"]["windows"]["outside"] == "skip"
        runs[pipeline] = run_now(api, spec["name"])
    for pipeline, run_id in runs.items():
        run = wait_for_run(api, run_id)
        assert (run["state_type"], run["state_name"]) == ("CANCELLED", "OutsideWindow"), pipeline
        assert "Outside its execution windows" in run["state_message"]
        assert flow_run(prefect_api_url, run_id)["run_count"] == 0  # it never ran

    name = specs["api_call"]["name"]
    changed = api.patch(f"/api/schedules/{name}", json={"windows": {**windows, "outside": "defer"}})
    assert changed.status_code == 200, changed.text
    deferred = run_now(api, name)
    opening = next_opening(datetime.now(UTC), [Window.model_validate(window)])

    def moved() -> dict | None:
        run = flow_run(prefect_api_url, deferred)
        return run if "deferred" in (run["state"]["message"] or "") else None

    state = wait_until(moved, "the run deferred to its window")["state"]
    assert state["type"] == "SCHEDULED"
    assert datetime.fromisoformat(state["state_details"]["scheduled_time"]) == opening
    api.post(f"/api/runs/{deferred}/cancel")
    bypass = wait_for_run(api, run_now(api, name, ignore_windows=True))
    assert bypass["state_type"] == "COMPLETED", bypass

    patched = api.patch(f"/api/schedules/{name}", json={"priority": "low", "windows": None})
    assert (patched.json()["priority"], patched.json()["windows"]) == ("low", None)
    refused = api.post("/api/schedules", json={**specs["crew"], "name": "ctl-bad", "windows": {}})
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "windows", "allowed"]
    assert api.get("/api/schedules/ctl-bad").status_code == 404


def api_get(prefect_api_url: str, path: str) -> dict[str, Any]:
    response = httpx.get(f"{prefect_api_url}{path}", timeout=30)
    response.raise_for_status()
    return dict(response.json())


def test_a_run_due_while_one_runs_is_skipped_enqueued_or_cancelled(
    api: TestClient, worker: Any, source: HttpSource, prefect_api_url: str
) -> None:
    release = threading.Event()
    source.route("/held", Reply(200, PRICES, hold=release))
    names = {
        collision: api_call(api, source, "/held", concurrency_limit=1, collision=collision)
        for collision in ("skip", "enqueue", "cancel_new")
    }
    try:
        firsts = {c: run_now(api, name) for c, name in names.items()}
        wait_until(
            lambda: all(
                flow_run(prefect_api_url, r)["state_type"] == "RUNNING" for r in firsts.values()
            ),
            "the first runs running",
        )
        seconds = {c: run_now(api, name) for c, name in names.items()}
        stopped = finished(prefect_api_url, [seconds["skip"], seconds["cancel_new"]])
        waiting = wait_until(
            lambda: (
                (run := flow_run(prefect_api_url, seconds["enqueue"]))["state_name"]
                == "AwaitingConcurrencySlot"
                and run
            ),
            "the enqueued run waiting for its slot",
        )
    finally:
        release.set()
    skipped, cancelled = stopped
    assert (skipped["state_type"], skipped["state_name"]) == ("CANCELLED", "Skipped")
    assert skipped["state"]["message"].startswith("Skipped: its previous run was still running")
    assert (cancelled["state_type"], cancelled["state_name"]) == ("CANCELLED", "Cancelled")
    assert "concurrency limit" in cancelled["state"]["message"]
    assert waiting["state_type"] == "SCHEDULED"
    enqueued, first = finished(prefect_api_url, [seconds["enqueue"], firsts["enqueue"]])
    assert enqueued["state_type"] == first["state_type"] == "COMPLETED"
    assert enqueued["start_time"] >= first["end_time"]  # ISO 8601 in UTC: ordered as text


def pause_queue(work_pool: str, queue: str, paused: bool) -> None:
    """Pause or resume one of the pool's queues: while paused, no worker takes its runs."""

    async def update() -> None:
        async with get_client() as client:
            found = await client.read_work_queue_by_name(queue, work_pool_name=work_pool)
            await client.update_work_queue(found.id, is_paused=paused)

    run_coro_as_sync(update())


def test_catch_up_runs_all_the_latest_or_none_of_the_missed_runs(
    api: TestClient, worker: Any, source: HttpSource, prefect_api_url: str, work_pool: str
) -> None:
    """Five runs of a schedule go Late while no worker takes them (their queue is paused, as
    if no worker ran), then a worker does: `all` runs five, `latest` one, `none` none."""
    pause_queue(work_pool, "normal", True)
    try:
        deployments = {}
        for policy in ("all", "latest", "none"):
            name = api_call(api, source, catchup={"policy": policy, "window_seconds": 1})
            deployments[policy] = api.get(f"/api/schedules/{name}").json()["deployment_id"]
        # Due 5 to 3 s ago (made within a minute of their time, they count as missed, not
        # as a backfill): the newest is past its 1 s window too.
        due = datetime.now(UTC) - timedelta(seconds=5)
        times = [due + timedelta(seconds=s / 2) for s in range(5)]
        made = {p: planned_runs(d, times) for p, d in deployments.items()}
    finally:
        pause_queue(work_pool, "normal", False)
    ended = {p: finished(prefect_api_url, ids) for p, ids in made.items()}
    names = {p: [r["state_name"] for r in runs] for p, runs in ended.items()}
    assert names["all"] == ["Completed"] * 5
    assert names["latest"] == ["Superseded"] * 4 + ["Completed"]  # only the newest ran
    assert names["none"] == ["Missed"] * 5
    assert "catch-up: none" in ended["none"][0]["state"]["message"]
    assert all(r["run_count"] == 0 for r in ended["none"])


def cancel_runs(run_ids: list[str]) -> None:
    async def cancel() -> None:
        async with get_client() as client:
            for run_id in run_ids:
                await client.set_flow_run_state(uuid.UUID(run_id), Cancelled(), force=True)

    run_coro_as_sync(cancel())


def test_backfill_makes_each_missed_run_once_at_its_time(
    api: TestClient,
    worker: Any,
    source: HttpSource,
    sqlite_engine: Engine,
    work_pool: str,
    prefect_api_url: str,
) -> None:
    """One day of an hourly schedule: 24 runs, the same 24 when asked again, each at its
    hour; three of them run (the rest are cancelled, to spare the suite) and each flow read
    its own hour from prefect.runtime. The schedule's catch-up (`none`) leaves them alone:
    they were made after their time, not missed."""
    hourly = {"type": "cron", "cron": "0 * * * *", "timezone": "UTC"}
    name = api_call(api, source, timing=hourly, catchup={"policy": "none", "window_seconds": 0})
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    body = {"start": day.isoformat(), "end": (day + timedelta(days=1)).isoformat()}
    pause_queue(work_pool, "normal", True)
    try:
        first = api.post(f"/api/schedules/{name}/backfill", json=body)
        assert first.status_code == 201, first.text
        again = api.post(f"/api/schedules/{name}/backfill", json=body)
        assert first.json()["runs"] == 24 and again.json() == first.json()  # none made twice
        hours = [datetime.fromisoformat(t) for t in first.json()["scheduled_times"]]
        assert hours == [day + timedelta(hours=h) for h in range(24)]
        ids = first.json()["flow_run_ids"]
        running = [ids[0], ids[11], ids[23]]
        cancel_runs([i for i in ids if i not in running])
    finally:
        pause_queue(work_pool, "normal", False)

    assert all(r["state_type"] == "COMPLETED" for r in finished(prefect_api_url, running))
    with Session(sqlite_engine) as session:
        outcomes = get_run_outcomes(session, [uuid.UUID(i) for i in running])
    seen = sorted(datetime.fromisoformat(o.meta["scheduled_for"]) for o in outcomes.values())
    assert seen == [hours[0], hours[11], hours[23]]  # each read its own time

    too_long = {"start": day.isoformat(), "end": (day + timedelta(days=60)).isoformat()}
    refused = api.post(f"/api/schedules/{name}/backfill", json=too_long)
    assert refused.status_code == 422 and refused.json()["detail"][0]["loc"] == ["body", "end"]
    backwards = {"start": body["end"], "end": body["start"]}
    assert api.post(f"/api/schedules/{name}/backfill", json=backwards).status_code == 422
    manual = api_call(api, source)
    assert api.post(f"/api/schedules/{manual}/backfill", json=body).status_code == 422


def test_a_critical_run_queued_behind_normal_ones_is_taken_first(prefect_api_url: str) -> None:
    """The pool's one slot is held; ten normal runs and then one critical run are due. When
    the slot frees, the run Prefect hands a polling worker is the critical one."""
    pool = f"prio-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[list[Any], list[Any], str]:
        async with get_client() as client:
            await ensure_work_pool(client, pool, 1)
            flow_id = await client.create_flow_from_name("priority-test")
            ids = {}
            for queue in ("normal", "critical"):
                ids[queue] = await client.create_deployment(
                    flow_id=flow_id,
                    name=f"{pool}-{queue}",
                    work_pool_name=pool,
                    work_queue_name=queue,
                )
            holder = await client.create_flow_run_from_deployment(ids["normal"], state=Running())
            now = datetime.now(UTC)
            for seconds in range(10, 0, -1):
                await client.create_flow_run_from_deployment(
                    ids["normal"], state=Scheduled(scheduled_time=now - timedelta(seconds=seconds))
                )
            critical = await client.create_flow_run_from_deployment(
                ids["critical"], state=Scheduled(scheduled_time=now)
            )
            full = await client.get_scheduled_flow_runs_for_work_pool(pool)
            await client.set_flow_run_state(holder.id, Completed(), force=True)
            freed = await client.get_scheduled_flow_runs_for_work_pool(pool)
            return full, freed, str(critical.id)

    answer: tuple[list[Any], list[Any], str] = run_coro_as_sync(scenario())
    full, freed, critical = answer
    assert full == []  # the slot is held: nothing to start
    assert [str(r.flow_run.id) for r in freed] == [critical]


def test_jitter_spreads_runs_due_at_the_same_time(
    api: TestClient, worker: Any, source: HttpSource, prefect_api_url: str, work_pool: str
) -> None:
    """20 runs due at the same second, jitter 3,600 s: the worker moves each to its own stable
    offset over the range (any within the worker's look-ahead runs then, never before). A
    range wider than the look-ahead (60 s) keeps the pool's 4 slots free of runs waiting."""
    name = api_call(api, source, jitter_seconds=3600, priority="high")
    deployment_id = api.get(f"/api/schedules/{name}").json()["deployment_id"]
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=2)
    pause_queue(work_pool, "high", True)  # all 20 exist when the worker first sees them
    try:
        ids = planned_runs(deployment_id, [due] * 20)
    finally:
        pause_queue(work_pool, "high", False)
    targets = {i: due + jitter_offset(uuid.UUID(i), 3600) for i in ids}

    def moved() -> list[dict] | None:
        query = {"flow_runs": {"id": {"any_": ids}}, "limit": len(ids)}
        runs = httpx.post(f"{prefect_api_url}/flow_runs/filter", json=query, timeout=30).json()
        return runs if len(runs) == len(ids) and all(at_offset(r) for r in runs) else None

    def at_offset(run: dict) -> bool:
        """Moved to its offset: Scheduled, or Pending (waiting) at it, or started since."""
        if run["state_type"] not in ("SCHEDULED", "PENDING"):
            return True
        planned = datetime.fromisoformat(run["state"]["state_details"]["scheduled_time"])
        return abs((planned - targets[run["id"]]).total_seconds()) < 0.01

    runs = wait_until(moved, "20 runs moved to their offsets", timeout=60, every=1)
    offsets = []
    for run in runs:
        assert datetime.fromisoformat(run["expected_start_time"]) == due
        target = targets[run["id"]]
        if run["state_type"] in ("SCHEDULED", "PENDING"):
            assert "Jitter" in (run["state"]["message"] or "") or run["state_type"] == "PENDING"
        else:
            assert datetime.fromisoformat(run["start_time"]) >= target - timedelta(seconds=1)
        offsets.append((target - due).total_seconds())
    assert max(offsets) - min(offsets) > 1800, sorted(offsets)  # spread, not bunched
    assert api.delete(f"/api/schedules/{name}").status_code == 204


def test_a_run_past_its_timeout_fails_and_retries_back_off(
    api: TestClient, worker: Any, source: HttpSource, prefect_api_url: str
) -> None:
    """Every attempt hangs past the 1 s timeout: Prefect's flow timeout fails it (TimedOut),
    and the two retries wait 1 s, then 2 s (exponential), as their states' times show."""
    release = threading.Event()
    source.route("/hangs", Reply(200, PRICES, hold=release))
    retry = {"attempts": 2, "delay_seconds": 1, "backoff": "exponential"}
    name = api_call(api, source, "/hangs", timeout_seconds=1, retry=retry)
    try:
        run = wait_for_run(api, run_now(api, name))
    finally:
        release.set()
    assert (run["state_type"], run["state_name"]) == ("FAILED", "TimedOut"), run
    history = httpx.get(
        f"{prefect_api_url}/flow_run_states/", params={"flow_run_id": run["id"]}, timeout=30
    ).json()
    waits = [
        datetime.fromisoformat(s["state_details"]["scheduled_time"])
        - datetime.fromisoformat(s["timestamp"])
        for s in history
        if s["name"] == "AwaitingRetry"
    ]
    assert [round(w.total_seconds()) for w in waits] == [1, 2]


def test_runs_sharing_a_global_limit_run_one_at_a_time(
    api: TestClient, worker: Any, source: HttpSource, prefect_api_url: str
) -> None:
    """Two schedules name the global limit `ctl-warehouse` (created with 1 slot): the second
    run waits for the first to end; a rate limit is created with slots that decay."""
    limit = f"ctl-warehouse-{uuid.uuid4().hex[:6]}"
    rate = {"name": f"ctl-rate-{uuid.uuid4().hex[:6]}", "per_second": 0.5}
    release = threading.Event()
    source.route("/held-limit", Reply(200, PRICES, hold=release))
    first_name = api_call(api, source, "/held-limit", limits=[limit])
    second_name = api_call(api, source, "/prices", limits=[{"name": limit}], rate_limit=rate)
    created = api_get(prefect_api_url, f"/v2/concurrency_limits/{limit}")
    assert created["limit"] == 1
    decaying = api_get(prefect_api_url, f"/v2/concurrency_limits/{rate['name']}")
    assert decaying["slot_decay_per_second"] == 0.5
    try:
        first = run_now(api, first_name)
        wait_until(lambda: flow_run(prefect_api_url, first)["state_type"] == "RUNNING", "running")
        second = run_now(api, second_name)
        time.sleep(2)  # long enough for the second to have started, were it free to
        assert flow_run(prefect_api_url, second)["state_type"] == "PENDING"
    finally:
        release.set()
    ended = finished(prefect_api_url, [first, second])
    assert [r["state_type"] for r in ended] == ["COMPLETED", "COMPLETED"]
    assert ended[1]["start_time"] >= ended[0]["end_time"]
