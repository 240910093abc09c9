"""Fault item 11: a run whose worker and process die together ends Crashed and frees its slot.

A worker of its own on a pool of its own, so the session's worker lives on: its whole process
group (the worker, its zygote and the run's process) is SIGKILLed while the run waits on its
source. Nobody is left to report the crash; Prefect's heartbeats stop and the automation of
`deployments/automations.py` marks the run Crashed. The automation here watches this
deployment only and waits 15 s after the run's first heartbeat (production: 90 s, three of
Prefect's 30 s heartbeats): shorter than a heartbeat, which is right only because the run is
killed at once, and is checked to be still Running when it is.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect import get_client
from prefect.client.schemas.actions import DeploymentUpdate
from prefect.states import Scheduled
from prefect.utilities.asyncutils import run_coro_as_sync

from deployments.automations import MESSAGE, ensure_automation, unresponsive_runs_automation
from deployments.stack import worker_command, worker_env
from deployments.warm_worker import HANDED_BACK
from deployments.work_pool import ensure_work_pool
from tests.utils.factories import api_call_spec
from tests.utils.http_source import Reply, serve_http_source
from tests.utils.prefect_cli import prefect_env
from tests.utils.runs import flow_run, wait_until

pytestmark = pytest.mark.e2e

WITHOUT_HEARTBEAT = timedelta(seconds=15)
Worker = subprocess.Popen[bytes]


def heartbeats(api_url: str, run_id: str) -> int:
    response = httpx.post(
        f"{api_url}/events/filter",
        json={
            "filter": {
                "event": {"name": ["prefect.flow-run.heartbeat"]},
                "resource": {"id": [f"prefect.flow-run.{run_id}"]},
            }
        },
        timeout=30,
    )
    response.raise_for_status()
    return len(response.json()["events"])


@pytest.fixture
def lone_pool(prefect_api_url: str, tmp_path: Path) -> Iterator[tuple[str, Worker]]:
    """A pool of its own with one warm worker, in a process group of its own."""
    pool = f"lone-{uuid.uuid4().hex[:6]}"

    async def create() -> None:
        async with get_client() as client:
            await ensure_work_pool(client, pool, 4)

    run_coro_as_sync(create())
    log = open(tmp_path / "worker.log", "wb")  # noqa: SIM115
    worker = subprocess.Popen(
        worker_command(pool),
        env=worker_env(
            prefect_env(
                prefect_api_url,
                PREFECT_WORKER_QUERY_SECONDS="1",
                PREFECT_WORKER_PREFETCH_SECONDS="60",  # as make run's warm worker
            )
        ),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        yield pool, worker
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()
        log.close()
        httpx.delete(f"{prefect_api_url}/work_pools/{pool}", timeout=30)


def test_a_run_whose_worker_died_with_it_ends_crashed_and_frees_its_slot(
    api, lone_pool, prefect_api_url
):
    pool, worker = lone_pool
    with serve_http_source() as source:
        source.route("/lost", Reply(200, {"data": []}, delay=300))
        spec = api_call_spec("lost-worker", source.url, "/lost")
        spec["parameters"]["request"].update(timeout_seconds=600, retries=0)
        created = api.post("/api/schedules", json=spec)
        assert created.status_code == 201, created.text
        deployment_id = created.json()["deployment_id"]
        name = f"crash-lost-{uuid.uuid4().hex[:6]}"

        async def prepare() -> None:
            async with get_client() as client:
                await client.update_deployment(deployment_id, DeploymentUpdate(work_pool_name=pool))
                await ensure_automation(
                    client,
                    unresponsive_runs_automation(
                        WITHOUT_HEARTBEAT, name=name, deployment_id=deployment_id
                    ),
                )

        run_coro_as_sync(prepare())
        try:
            run_id = api.post("/api/schedules/lost-worker/run").json()["flow_run_id"]
            wait_until(
                lambda: flow_run(prefect_api_url, run_id)["state_type"] == "RUNNING",
                "the run starting",
                timeout=60,
            )
            wait_until(lambda: heartbeats(prefect_api_url, run_id), "a heartbeat", timeout=30)
            running = flow_run(prefect_api_url, run_id)
            assert running["state_type"] == "RUNNING"  # not yet crashed by the automation
            pid = int(str(running["infrastructure_pid"]).split(":")[-1])
            assert os.getpgid(pid) == worker.pid  # the run's process dies with the worker
            os.killpg(worker.pid, signal.SIGKILL)
            worker.wait()

            ended = wait_until(
                lambda: (
                    (run := flow_run(prefect_api_url, run_id))["state_type"] != "RUNNING" and run
                ),
                "the run ending",
                timeout=WITHOUT_HEARTBEAT.total_seconds() + 45,
            )
            assert ended["state_type"] == "CRASHED", ended
            assert ended["state"]["message"] == MESSAGE.format(seconds=15)
            busy = httpx.post(
                f"{prefect_api_url}/flow_runs/count",
                json={
                    "work_pools": {"name": {"any_": [pool]}},
                    "flow_runs": {"state": {"type": {"any_": ["PENDING", "RUNNING"]}}},
                },
                timeout=30,
            ).json()
            assert busy == 0  # the pool's slot is free again
        finally:

            async def clean() -> None:
                async with get_client() as client:
                    for automation in await client.read_automations_by_name(name):
                        await client.delete_automation(automation.id)

            run_coro_as_sync(clean())
            api.delete("/api/schedules/lost-worker")


def test_the_automation_is_made_once_and_brought_up_to_date(prefect_api_url):
    name = f"crash-idempotent-{uuid.uuid4().hex[:6]}"

    async def scenario() -> list[Any]:
        async with get_client() as client:
            first = unresponsive_runs_automation(name=name)
            await ensure_automation(client, first)
            await ensure_automation(client, first)  # again: nothing new
            await client.create_automation(first)  # a duplicate made by hand
            await ensure_automation(client, unresponsive_runs_automation(timedelta(120), name=name))
            found = await client.read_automations_by_name(name)
            for automation in found:
                await client.delete_automation(automation.id)
            return found

    found: list[Any] = run_coro_as_sync(scenario())
    assert len(found) == 1
    assert found[0].trigger.within == timedelta(120)
    assert found[0].trigger.posture == "Proactive"
    assert found[0].actions[0].state == "CRASHED"


def test_every_run_of_the_pool_sends_heartbeats_the_automation_waits_three_of():
    from deployments.job_template import HEARTBEAT_ENV, HEARTBEAT_SECONDS, default_job_env

    assert default_job_env()[HEARTBEAT_ENV] == str(HEARTBEAT_SECONDS) == "30"
    automation = unresponsive_runs_automation()
    assert automation.trigger.within == timedelta(seconds=90)  # type: ignore[union-attr]
    assert automation.trigger.match_related.root == {}  # type: ignore[union-attr]  # every run


def test_a_run_claimed_but_not_started_goes_back_to_scheduled_when_its_worker_stops(
    api, lone_pool, prefect_api_url
):
    """Fault: the worker claims runs up to a minute ahead; stopped before one's time, the run
    was left Pending for ever. Now it is Scheduled again, at its own time."""
    pool, worker = lone_pool
    with serve_http_source() as source:
        source.route("/later", Reply(200, {"data": []}))
        spec = api_call_spec("claimed-early", source.url, "/later")
        assert api.post("/api/schedules", json=spec).status_code == 201
        deployment_id = api.get("/api/schedules/claimed-early").json()["deployment_id"]
        due = datetime.now(UTC) + timedelta(seconds=40)

        async def create() -> str:
            async with get_client() as client:
                await client.update_deployment(deployment_id, DeploymentUpdate(work_pool_name=pool))
                run = await client.create_flow_run_from_deployment(
                    deployment_id, state=Scheduled(scheduled_time=due)
                )
                return str(run.id)

        try:
            run_id: str = run_coro_as_sync(create())
            # Claimed, and its process started (waiting for its time): what is handed back.
            wait_until(
                lambda: (
                    (run := flow_run(prefect_api_url, run_id))["state_type"] == "PENDING"
                    and run.get("infrastructure_pid")
                ),
                "the worker claiming the run and starting its process",
                timeout=30,
            )
            worker.send_signal(signal.SIGINT)
            assert worker.wait(timeout=30) == 0
            run = flow_run(prefect_api_url, run_id)
            assert run["state_type"] == "SCHEDULED", run
            assert run["state"]["message"] == HANDED_BACK
            assert datetime.fromisoformat(run["next_scheduled_start_time"]) == due
            assert source.hits["/later"] == 0
        finally:
            api.delete("/api/schedules/claimed-early")
