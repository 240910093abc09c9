"""The warm worker keeps what Prefect's process worker gives: each run its own process going
Pending -> Running -> Completed with its logs in Prefect, Crashed when its process is killed,
Cancelled from the CLI; and it starts runs as forks of its zygote."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.utils.factories import api_call_spec
from tests.utils.http_source import HttpSource, Reply, serve_http_source
from tests.utils.prefect_cli import prefect_cli
from tests.utils.runs import flow_run, wait_for_run, wait_until

pytestmark = pytest.mark.e2e

PRICES = {"data": [{"symbol": "BTC", "quote": {"usd": 64000}}]}


@pytest.fixture(scope="module")
def source() -> Iterator[HttpSource]:
    with serve_http_source() as source:
        yield source


def running_pid(api_url: str, run_id: str) -> int:
    """The pid of a Running run's process, as the worker reported it (`host:pid`)."""

    def pid() -> int | None:
        run = flow_run(api_url, run_id)
        if run["state_type"] != "RUNNING" or not run.get("infrastructure_pid"):
            return None
        return int(str(run["infrastructure_pid"]).rsplit(":", 1)[-1])

    found: int = wait_until(pid, f"run {run_id} running")
    return found


def slow_run(api: Any, source: HttpSource, name: str) -> str:
    """A run that waits 60 s for its source to answer."""
    source.route(f"/{name}", Reply(200, PRICES, delay=60))
    spec = api_call_spec(name, source.url, f"/{name}")
    spec["parameters"]["request"].update(timeout_seconds=120, retries=0)
    assert api.post("/api/schedules", json=spec).status_code == 201
    run_id: str = api.post(f"/api/schedules/{name}/run").json()["flow_run_id"]
    return run_id


def test_a_run_goes_pending_running_completed(api, worker, source, prefect_api_url):
    source.route("/warm", Reply(200, PRICES))
    assert api.post("/api/schedules", json=api_call_spec("warm-states", source.url, "/warm"))
    run_id = api.post("/api/schedules/warm-states/run").json()["flow_run_id"]
    assert wait_for_run(api, run_id)["state_type"] == "COMPLETED"
    states = httpx.get(f"{prefect_api_url}/flow_run_states/", params={"flow_run_id": run_id})
    kinds = [s["type"] for s in sorted(states.json(), key=lambda s: s["timestamp"])]
    assert kinds[-3:] == ["PENDING", "RUNNING", "COMPLETED"], kinds


def test_a_failed_runs_logs_reach_prefect(api, worker, source, prefect_api_url):
    # The suite logs at WARNING (tests/conftest.py): a failure's error lines are what is sent.
    source.route("/warm-missing", Reply(404, {}))
    spec = api_call_spec("warm-logs", source.url, "/warm-missing")
    assert api.post("/api/schedules", json=spec).status_code == 201
    run_id = api.post("/api/schedules/warm-logs/run").json()["flow_run_id"]
    assert wait_for_run(api, run_id)["state_type"] == "FAILED"

    def logged() -> list[str]:
        logs = httpx.post(
            f"{prefect_api_url}/logs/filter",
            json={"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200},
        ).json()
        return [entry["message"] for entry in logs if "HTTP 404" in entry["message"]]

    wait_until(logged, "the run's error log in Prefect", timeout=30)


def test_the_runs_process_is_a_fork_of_the_warm_parent(api, worker, source, prefect_api_url):
    run_id = slow_run(api, source, "warm-fork")
    pid = running_pid(prefect_api_url, run_id)
    try:
        with open(f"/proc/{pid}/stat") as stat:
            parent = int(stat.read().rsplit(")", 1)[1].split()[1])
        with open(f"/proc/{parent}/cmdline", "rb") as cmdline:
            assert b"deployments.zygote" in cmdline.read()
    finally:
        os.kill(pid, signal.SIGKILL)
    wait_for_run(api, run_id)


def test_a_killed_run_process_ends_crashed(api, worker, source, prefect_api_url):
    run_id = slow_run(api, source, "warm-crash")
    os.kill(running_pid(prefect_api_url, run_id), signal.SIGKILL)
    run = wait_for_run(api, run_id)
    assert run["state_type"] == "CRASHED", run
    assert "-9" in (run["state_message"] or ""), run


def test_cancelling_from_the_cli_ends_cancelled_and_stops_the_process(
    api, worker, source, prefect_api_url
):
    run_id = slow_run(api, source, "warm-cancel")
    pid = running_pid(prefect_api_url, run_id)
    cancelled = prefect_cli(prefect_api_url, "flow-run", "cancel", run_id)
    assert cancelled.returncode == 0, cancelled.stdout + cancelled.stderr
    assert wait_for_run(api, run_id)["state_type"] == "CANCELLED"

    def gone() -> bool:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        return False

    wait_until(gone, f"process {pid} stopping")


def test_a_cli_run_with_parameters_runs_on_the_warm_worker(api, worker, source, prefect_api_url):
    source.route("/warm-cli", Reply(200, PRICES))
    assert api.post("/api/schedules", json=api_call_spec("warm-cli", source.url, "/other"))
    started = prefect_cli(
        prefect_api_url,
        "deployment",
        "run",
        "api-call/warm-cli",
        "--param",
        'request={"path": "/warm-cli", "retries": 0}',
    )
    assert started.returncode == 0, started.stdout + started.stderr
    run_id = str(uuid.UUID(started.stdout.split("UUID: ")[1].split()[0]))
    assert wait_for_run(api, run_id)["state_type"] == "COMPLETED"
    assert source.hits["/warm-cli"] == 1 and source.hits["/other"] == 0


def test_prefects_cli_creates_a_warm_pool_with_our_template(prefect_api_url):
    from deployments.warm_worker import WarmProcessWorker

    created = prefect_cli(
        prefect_api_url, "work-pool", "create", "cli-warm", "--type", "warm-process"
    )
    assert created.returncode == 0, created.stdout + created.stderr
    pool = httpx.get(f"{prefect_api_url}/work_pools/cli-warm").json()
    assert pool["type"] == "warm-process"
    assert pool["base_job_template"] == WarmProcessWorker.get_default_base_job_template()
