"""Security item 1: no run and no deployment can change what our pool's worker executes.

Against Prefect's own API (the session's server), with the pool as `make run` creates it: a
flow run or a deployment that sets `command`, `env` or `working_dir` is refused with 422, and
nothing is created; flow retries still travel as job variables. Deployments made before the
lock are rewritten when the pool is ensured again."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest
from prefect import get_client
from prefect.utilities.asyncutils import run_coro_as_sync

from deployments.job_template import (
    HEARTBEAT_ENV,
    RETRIES_ENV,
    RETRY_DELAY_ENV,
    RUN_ENV,
    locked_job_template,
    locked_job_variables,
    retries_of,
)
from deployments.warm_worker import WARM_ENGINE, WarmProcessJobConfiguration
from deployments.work_pool import ensure_work_pool
from flows.run_controls import DEFAULTS as RUN_DEFAULTS
from tests.utils.prefect_server import request_retrying

ATTACKS = [
    {"command": "touch /tmp/owned"},
    {"env": {"PYTHONPATH": "/tmp/evil"}},
    {"env": {RETRIES_ENV: "3"}},  # even Prefect's own settings: only through `retries`
    {"working_dir": "/tmp"},
    {"retries": 99},  # past the spec's bound
]


def prefect(api_url: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """Prefect's API, waiting out the 503s its SQLite answers while another test writes."""
    return request_retrying(method, f"{api_url}{path}", **kwargs)


@pytest.fixture(scope="module")
def deployment_id(prefect_api_url: str, work_pool: str) -> str:
    flow = prefect(prefect_api_url, "POST", "/flows/", json={"name": "lock-test"}).json()
    response = prefect(
        prefect_api_url,
        "POST",
        "/deployments/",
        json={
            "name": f"lock-{uuid.uuid4().hex[:8]}",
            "flow_id": flow["id"],
            "work_pool_name": work_pool,
            "entrypoint": "flows.api_call.api_call",
            "job_variables": {"retries": 2, "retry_delay_seconds": 5},
        },
    )
    assert response.status_code in (200, 201), response.text
    return str(response.json()["id"])


@pytest.mark.parametrize("job_variables", ATTACKS)
def test_a_run_cannot_choose_what_the_worker_executes(
    prefect_api_url: str, deployment_id: str, job_variables: dict[str, Any]
) -> None:
    runs_before = prefect(prefect_api_url, "POST", "/flow_runs/count", json={}).json()
    response = prefect(
        prefect_api_url,
        "POST",
        f"/deployments/{deployment_id}/create_flow_run",
        json={"job_variables": job_variables},
    )
    assert response.status_code == 422, response.text
    assert prefect(prefect_api_url, "POST", "/flow_runs/count", json={}).json() == runs_before


@pytest.mark.parametrize(
    "job_variables", [*ATTACKS[:4], {"env.PYTHONPATH": "/tmp/evil"}, {"working_dir.x": "/"}]
)
def test_a_deployment_cannot_choose_what_the_warm_worker_executes(
    prefect_api_url: str, deployment_id: str, job_variables: dict[str, Any]
) -> None:
    """Prefect checks a deployment's job variables when it is created, but not when a PATCH
    leaves its pool alone; the job the warm worker builds for its runs is the same whatever
    the deployment stored."""
    command = WARM_ENGINE
    response = prefect(
        prefect_api_url,
        "PATCH",
        f"/deployments/{deployment_id}",
        json={"job_variables": {"retries": 2, **job_variables}},
    )
    stored = prefect(prefect_api_url, "GET", f"/deployments/{deployment_id}").json()
    try:
        job = run_coro_as_sync(
            WarmProcessJobConfiguration.from_template_and_values(
                locked_job_template(command, gated=True), stored["job_variables"]
            )
        )
        assert job is not None
        assert job.command == command
        # Whether Prefect took or refused the PATCH, only the retry and run-control settings
        # reach the job.
        delay = stored["job_variables"].get("retry_delay_seconds", 30)
        expected = {RETRIES_ENV: "2", RETRY_DELAY_ENV: str(delay), HEARTBEAT_ENV: "30"}
        assert job.env == {**expected, **RUN_DEFAULTS}
        assert job.working_dir is None
    finally:
        prefect(
            prefect_api_url,
            "PATCH",
            f"/deployments/{deployment_id}",
            json={"job_variables": {"retries": 2, "retry_delay_seconds": 5}},
        )
    assert response.status_code in (204, 422), response.text
    if response.status_code == 422:
        assert stored["job_variables"] == {"retries": 2, "retry_delay_seconds": 5}


def test_a_run_may_still_set_its_retries(prefect_api_url: str, deployment_id: str) -> None:
    response = prefect(
        prefect_api_url,
        "POST",
        f"/deployments/{deployment_id}/create_flow_run",
        json={"job_variables": {"retries": 1}, "state": {"type": "CANCELLED"}},
    )
    assert response.status_code in (200, 201), response.text


def test_the_pool_template_fixes_the_command_env_and_folder(
    prefect_api_url: str, work_pool: str
) -> None:
    pool = prefect(prefect_api_url, "GET", f"/work_pools/{work_pool}").json()
    template = pool["base_job_template"]
    assert template == locked_job_template(WARM_ENGINE, gated=True)
    configuration = template["job_configuration"]
    assert configuration["command"] == WARM_ENGINE
    assert configuration["env"] == {
        RETRIES_ENV: "{{ retries }}",
        RETRY_DELAY_ENV: "{{ retry_delay_seconds }}",
        HEARTBEAT_ENV: "30",  # every run sends heartbeats (deployments/automations.py)
        **{env: f"{{{{ {name} }}}}" for name, env in RUN_ENV.items()},
    }
    assert configuration["controls"] == "{{ controls }}"  # the worker's, never the run's env
    assert "working_dir" not in configuration
    assert template["variables"]["additionalProperties"] is False


def test_deployments_made_before_the_lock_are_rewritten(
    prefect_api_url: str, work_pool: str
) -> None:
    """A deployment with the old `env` retries (and a command) in a pool with the stock
    template keeps its retries and loses the rest when the pool is locked."""
    pool = f"old-{uuid.uuid4().hex[:8]}"
    from prefect.workers.process import ProcessWorker

    stock = ProcessWorker.get_default_base_job_template()
    created = prefect(
        prefect_api_url,
        "POST",
        "/work_pools/",
        json={"name": pool, "type": "process", "base_job_template": stock},
    )
    assert created.status_code in (200, 201), created.text
    flow = prefect(prefect_api_url, "POST", "/flows/", json={"name": "lock-test"}).json()
    old = {"env": {RETRIES_ENV: "3", RETRY_DELAY_ENV: "7", "X": "1"}, "command": "sh -c id"}
    made = prefect(
        prefect_api_url,
        "POST",
        "/deployments/",
        json={"name": "old", "flow_id": flow["id"], "work_pool_name": pool, "job_variables": old},
    ).json()

    async def lock() -> None:
        async with get_client() as client:
            await ensure_work_pool(client, pool, 4, "python -m prefect.engine", "process")

    run_coro_as_sync(lock())
    stored = prefect(prefect_api_url, "GET", f"/deployments/{made['id']}").json()
    assert stored["job_variables"] == {"retries": 3, "retry_delay_seconds": 7}
    template = prefect(prefect_api_url, "GET", f"/work_pools/{pool}").json()["base_job_template"]
    assert template == locked_job_template("python -m prefect.engine")


def test_job_variables_in_the_templates_terms() -> None:
    assert locked_job_variables({"retries": 1, "name": "x"}) is None
    assert locked_job_variables(None) is None
    assert locked_job_variables({"env": {RETRIES_ENV: "2"}, "labels": {"a": "b"}}) == {
        "labels": {"a": "b"},
        "retries": 2,
        "retry_delay_seconds": 30,
    }
    assert retries_of({"env": {RETRIES_ENV: "4", RETRY_DELAY_ENV: "9"}}) == (4, 9)
    assert retries_of({"retries": 1, "retry_delay_seconds": 2, "env": {RETRIES_ENV: "4"}}) == (1, 2)
    assert retries_of({}) == (0, 30)
