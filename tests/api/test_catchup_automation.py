"""Catch-up while no worker runs: Prefect's automation calls our API (served on a real port,
so Prefect's server can reach it), which ends missed runs as the worker would have."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prefect import get_client
from prefect.states import Late, Scheduled
from prefect.utilities.asyncutils import run_coro_as_sync
from sqlalchemy.engine import Engine

from api.main import create_app
from settings import get_settings
from tests.utils.factories import api_call_spec
from tests.utils.runs import flow_run, park_where_no_worker_serves, wait_until
from tests.utils.serve import serve_asgi

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def api_url(sqlite_engine: Engine, work_pool: str) -> Iterator[str]:
    with serve_asgi(create_app(sqlite_engine)) as url:
        yield url


def prefect(work: Any) -> Any:
    async def call() -> Any:
        async with get_client() as client:
            return await work(client)

    return run_coro_as_sync(call())


def parked_schedule(api: httpx.Client, work_pool: str) -> str:
    """A schedule with catch-up `none` whose queue no worker serves (as if none ran)."""
    name = f"late-{uuid.uuid4().hex[:8]}"
    spec = api_call_spec(
        name, "http://127.0.0.1:9", catchup={"policy": "none", "window_seconds": 0}
    )
    created = api.post("/api/schedules", json=spec)
    assert created.status_code == 201, created.text

    park_where_no_worker_serves(work_pool, created.json()["deployment_id"])
    return str(created.json()["deployment_id"])


def missed_run(deployment_id: str, due: datetime) -> str:
    """A run due at `due` that Prefect marked Late. The test server (the harness's ephemeral
    one) runs no late-runs service, so the test does what it does: the same Late state, so
    the same `prefect.flow-run.Late` event."""

    async def make(client: Any) -> str:
        run = await client.create_flow_run_from_deployment(
            uuid.UUID(deployment_id), state=Scheduled(scheduled_time=due)
        )
        await client.set_flow_run_state(run.id, Late(scheduled_time=due))
        return str(run.id)

    return str(prefect(make))


def test_a_late_run_is_ended_by_its_policy_while_no_worker_runs(
    api_url: str, work_pool: str, prefect_api_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(get_settings(), "public_api_url", api_url)
    with httpx.Client(base_url=api_url, timeout=30) as api:
        deployment_id = parked_schedule(api, work_pool)
        now = datetime.now(UTC)
        missed = missed_run(deployment_id, now - timedelta(seconds=30))
        late_at = datetime.now(UTC)
        # Made ten minutes after its time: a backfill, never missed, left for a worker.
        backfilled = missed_run(deployment_id, now - timedelta(minutes=10))

        def ended() -> dict | None:
            run = flow_run(prefect_api_url, missed)
            return run if run["state_type"] == "CANCELLED" else None

        run = wait_until(ended, "the missed run ended", 90, 0.5)
        assert run["state_name"] == "Missed" and "catch-up: none" in run["state"]["message"]
        acted = datetime.fromisoformat(run["state"]["timestamp"]) - late_at
        print(f"catch-up acted {acted.total_seconds():.1f} s after the run went Late")

        left = flow_run(prefect_api_url, backfilled)
        assert left["state_type"] == "SCHEDULED", left
        answer = api.post("/api/runs/catch-up", json={"flow_run_id": backfilled})
        assert answer.status_code == 200 and answer.json()["action"] == "run"


def test_late_runs_are_caught_up_when_the_api_starts(
    api: TestClient, sqlite_engine: Engine, work_pool: str, prefect_api_url: str
) -> None:
    """A run that went Late while our API was down (its automation's call was lost)."""
    deployment_id = parked_schedule(api, work_pool)
    owner = f"prefect.deployment.{deployment_id}"
    httpx.delete(f"{prefect_api_url}/automations/owned-by/{owner}", timeout=30)
    missed = missed_run(deployment_id, datetime.now(UTC) - timedelta(seconds=30))
    with TestClient(create_app(sqlite_engine), base_url="http://127.0.0.1"):

        def ended() -> bool:
            return flow_run(prefect_api_url, missed)["state_name"] == "Missed"

        assert wait_until(ended, "caught up at start", 30, 0.5)
