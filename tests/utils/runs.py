"""Waiting on flow runs, through our API or Prefect's."""

from __future__ import annotations

import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


def wait_for_run(api: TestClient, run_id: str, timeout: float = 120) -> dict[str, Any]:
    """Poll /api/runs/{id} until the run reaches a final state."""
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = api.get(f"/api/runs/{run_id}").json()
        if run.get("state_type") in FINAL_STATES:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s: {run}")


def flow_run(api_url: str, run_id: str) -> dict[str, Any]:
    """A flow run as Prefect's API answers it (state, infrastructure pid, times)."""
    response = httpx.get(f"{api_url}/flow_runs/{run_id}", timeout=30)
    response.raise_for_status()
    found: dict[str, Any] = response.json()
    return found


def wait_until(check: Any, what: str, timeout: float = 60, every: float = 0.2) -> Any:
    """`check()`'s first truthy answer, polled every `every` s; AssertionError after
    `timeout` s naming `what`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(every)
    raise AssertionError(f"{what} did not happen within {timeout:.0f}s")


def create_scheduled_runs(api_url: str, deployment_id: str, times: list[Any]) -> list[str]:
    """Runs of a deployment Scheduled at each of `times` (as Prefect's scheduler makes them),
    one request each through Prefect's REST API.

    A SQLite-backed Prefect answers a create that loses the write lock with 503 at once;
    Prefect's client waits ~2 s before its retry, so 20 runs took 30 s while a worker polled.
    Asked again after 50 ms instead."""
    ids = []
    with httpx.Client(base_url=api_url, timeout=30) as client:
        for when in times:
            body = {
                "state": {
                    "type": "SCHEDULED",
                    "state_details": {"scheduled_time": when.isoformat()},
                }
            }
            for _ in range(100):
                answer = client.post(f"/deployments/{deployment_id}/create_flow_run", json=body)
                if answer.status_code != 503:
                    break
                time.sleep(0.05)
            answer.raise_for_status()
            ids.append(str(answer.json()["id"]))
    return ids


# A queue of the test pool that stays paused: a deployment put there is one no worker serves.
PAUSED_QUEUE = "no-worker-serves"


def park_where_no_worker_serves(work_pool: str, deployment_id: str) -> None:
    """Move a deployment to PAUSED_QUEUE (made paused if missing): its runs wait, as they
    would while no worker ran."""
    from prefect import get_client
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.utilities.asyncutils import run_coro_as_sync

    async def park() -> None:
        async with get_client() as client:
            queues = [q.name for q in await client.read_work_queues(work_pool_name=work_pool)]
            if PAUSED_QUEUE not in queues:
                await client.create_work_queue(
                    name=PAUSED_QUEUE, work_pool_name=work_pool, is_paused=True
                )
            update = DeploymentUpdate(work_queue_name=PAUSED_QUEUE)
            await client.update_deployment(uuid.UUID(deployment_id), update)

    run_coro_as_sync(park())
