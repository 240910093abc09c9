"""Overload: 20 runs requested at the same moment all complete once, within the pool's limit."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import httpx
import pytest
from sqlmodel import Session, func, select

from db.models import ApiRecord, RunOutcome
from settings import get_settings
from tests.utils.factories import api_call_spec
from tests.utils.http_source import Reply, serve_http_source
from tests.utils.runs import wait_for_run

# 20 flow-run processes forked by the warm worker: well under a minute on two cores.
pytestmark = [pytest.mark.e2e, pytest.mark.overload, pytest.mark.timeout(600)]
RUNS = 20  # as many clients as the fault report used


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_twenty_simultaneous_runs_all_complete_once_and_the_api_stays_up(
    api, worker, sqlite_engine, tmp_root
):
    def request_run(i: int) -> httpx.Response:
        """A well-behaved client: on 503 it waits Retry-After and retries with the same key."""
        for _ in range(5):
            response = api.post(
                "/api/schedules/overload/run", headers={"Idempotency-Key": f"burst-{i}"}
            )
            if response.status_code != 503:
                return response
            time.sleep(float(response.headers.get("Retry-After", "1")))
        return response

    with serve_http_source() as source:
        source.route("/tick", Reply(200, {"data": [{"n": 1}, {"n": 2}]}))
        spec = api_call_spec("overload", source.url, "/tick")
        spec["parameters"]["extract"] = {"root": "data[]"}  # no key: every run appends its rows
        assert api.post("/api/schedules", json=spec).status_code == 201

        with ThreadPoolExecutor(max_workers=RUNS) as pool:
            responses = list(pool.map(request_run, range(RUNS)))
        assert [r.status_code for r in responses] == [202] * RUNS
        run_ids = {r.json()["flow_run_id"] for r in responses}
        assert len(run_ids) == RUNS

        assert api.get("/health").status_code == 200
        runs = [wait_for_run(api, run_id, timeout=400) for run_id in run_ids]
        assert api.get("/health").status_code == 200

    unfinished = [
        (r["id"], r["state_name"], r["state_message"])
        for r in runs
        if r["state_name"] != "Completed"
    ]
    worker_log = (tmp_root / "worker.log").read_text(errors="replace")[-4000:]
    assert not unfinished, f"{unfinished}\nworker log:\n{worker_log}"
    assert source.hits["/tick"] == RUNS
    intervals = [
        (datetime.fromisoformat(r["start_time"]), datetime.fromisoformat(r["end_time"]))
        for r in runs
    ]
    assert max_overlap(intervals) <= get_settings().pool_concurrency
    with Session(sqlite_engine) as session:
        stored = session.exec(select(func.count()).where(ApiRecord.schedule == "overload")).one()
        outcomes = session.exec(select(func.count()).where(RunOutcome.schedule == "overload")).one()
    assert (stored, outcomes) == (2 * RUNS, RUNS)
    assert api.get("/api/schedules/overload/runs").json()["count"] == RUNS
