"""`depends_on` on a real Prefect server and warm worker: Prefect's deployment triggers run a
schedule after the ones it depends on, and a failed dependency leaves it DEPENDENCY_FAILED."""

from __future__ import annotations

import time
import uuid
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.utils.factories import api_call_spec
from tests.utils.http_source import HttpSource
from tests.utils.runs import FINAL_STATES, wait_until

pytestmark = pytest.mark.e2e


def schedule(
    api: TestClient, source: HttpSource, depends_on: list[str], path: str = "/prices"
) -> str:
    name = f"dep-{uuid.uuid4().hex[:8]}"
    spec = api_call_spec(name, source.url, path, depends_on=depends_on)
    spec["parameters"]["request"].update(retries=0, timeout_seconds=15)
    answer = api.post("/api/schedules", json=spec)
    assert answer.status_code == 201, answer.text
    assert answer.json()["depends_on"] == depends_on
    return name


def history(api: TestClient, name: str) -> list[dict[str, Any]]:
    answer = api.get(f"/api/schedules/{name}/runs")
    assert answer.status_code == 200, answer.text
    runs: list[dict[str, Any]] = answer.json()["data"]
    return runs


def finished_runs(api: TestClient, names: list[str], timeout: float = 120) -> dict[str, dict]:
    """Each schedule's one run once all are final (fails if any has two)."""

    def all_final() -> dict[str, dict] | None:
        runs = {name: history(api, name) for name in names}
        for name, found in runs.items():
            assert len(found) <= 1, f"{name} ran {len(found)} times: {found}"
        if all(found and found[0]["state_type"] in FINAL_STATES for found in runs.values()):
            return {name: found[0] for name, found in runs.items()}
        return None

    found: dict[str, dict] = wait_until(all_final, f"runs of {names}", timeout, 0.5)
    return found


def at(value: str) -> datetime:
    return datetime.fromisoformat(value)


def test_a_diamond_and_a_chain_run_in_order_each_once(
    api: TestClient, worker: Any, source: HttpSource
) -> None:
    """B and C after A, D after both (a diamond), E after D (a chain): one run-now of A runs
    each once, each after what it depends on."""
    a = schedule(api, source, [])
    b = schedule(api, source, [a])
    c = schedule(api, source, [a])
    d = schedule(api, source, [b, c])
    e = schedule(api, source, [d])
    assert api.post(f"/api/schedules/{a}/run").status_code == 202

    runs = finished_runs(api, [a, b, c, d, e])
    assert {r["state_type"] for r in runs.values()} == {"COMPLETED"}, runs
    for after, before in ((b, a), (c, a), (d, b), (d, c), (e, d)):
        assert at(runs[before]["end_time"]) <= at(runs[after]["start_time"]), (before, after)
    # Nothing more comes (each trigger fired once): a few seconds of quiet.
    time.sleep(3)
    assert [len(history(api, name)) for name in (a, b, c, d, e)] == [1] * 5
    lag = [
        (at(runs[x]["start_time"]) - at(runs[y]["end_time"])).total_seconds()
        for y, x in ((a, b), (a, c), (d, e))
    ]
    print(f"dependency lag, Completed -> started: {', '.join(f'{s:.2f} s' for s in lag)}")


def test_a_failed_dependency_leaves_the_chain_not_run(
    api: TestClient, worker: Any, source: HttpSource
) -> None:
    """A fails: B and C (after it, in a chain) do not run; their history says why."""
    a = schedule(api, source, [], path="/down")
    b = schedule(api, source, [a])
    c = schedule(api, source, [b])
    assert api.post(f"/api/schedules/{a}/run").status_code == 202

    runs = finished_runs(api, [a, b, c])
    assert runs[a]["state_type"] == "FAILED", runs[a]
    for name, dependency in ((b, a), (c, b)):
        assert (runs[name]["state_type"], runs[name]["state_name"]) == (
            "CANCELLED",
            "DEPENDENCY_FAILED",
        )
        assert dependency in runs[name]["state_message"]
        assert runs[name]["outcome"] is None  # no flow ran: no outcome recorded


def test_bad_dependencies_are_refused_and_change_nothing(
    api: TestClient, source: HttpSource, prefect_api_url: str
) -> None:
    a = schedule(api, source, [])
    b = schedule(api, source, [a])
    c = schedule(api, source, [b])

    cycle = api.patch(f"/api/schedules/{a}", json={"depends_on": [c]})
    assert cycle.status_code == 422, cycle.text
    error = cycle.json()["detail"][0]
    assert error["loc"][-1] == "depends_on"
    assert f"{a} -> {c} -> {b} -> {a}" in error["msg"]
    assert api.get(f"/api/schedules/{a}").json()["depends_on"] == []

    itself = api.patch(f"/api/schedules/{a}", json={"depends_on": [a]})
    assert itself.status_code == 422
    assert itself.json()["detail"][0]["loc"][-2:] == ["depends_on", 0]

    name = f"dep-{uuid.uuid4().hex[:8]}"
    unknown = api.post(
        "/api/schedules", json=api_call_spec(name, source.url, depends_on=[a, "no-such"])
    )
    assert unknown.status_code == 422
    assert unknown.json()["detail"][0]["loc"][-2:] == ["depends_on", 1]
    assert "no-such" in unknown.json()["detail"][0]["msg"]
    assert api.get(f"/api/schedules/{name}").status_code == 404

    # The triggers are the deployment's own automations: gone with it.
    deployment_id = api.get(f"/api/schedules/{c}").json()["deployment_id"]
    owner = f"prefect.deployment.{deployment_id}"
    related = f"{prefect_api_url}/automations/related-to/{owner}"
    assert len(httpx.get(related, timeout=30).json()) == 2
    assert api.delete(f"/api/schedules/{c}").status_code == 204
    assert httpx.get(related, timeout=30).json() == []
