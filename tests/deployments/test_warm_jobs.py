"""The warm worker's job: always the warm engine, and the flow handed over when the zygote has
its code (no second read of the deployment, no pull steps in the run). No Prefect server: the
configuration is built from the pool's template as the worker builds it."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import DeploymentResponse

from deployments.prefect_patches import FLOW_ENTRYPOINT_ENV
from deployments.warm_worker import (
    SET_WORKING_DIRECTORY,
    WARM_ENGINE,
    WarmProcessJobConfiguration,
    WarmProcessWorker,
    zygote_entrypoint,
)
from settings import PROJECT_DIR

# Building a job from a template reads Prefect's API (block and variable references).
pytestmark = pytest.mark.usefixtures("prefect_api_url")


def here(directory: Path | str = PROJECT_DIR) -> list[dict[str, Any]]:
    return [{SET_WORKING_DIRECTORY: {"directory": str(directory)}}]


@pytest.mark.parametrize(
    ("entrypoint", "pull_steps", "expected"),
    [
        ("flows.api_call.api_call", None, "flows.api_call:api_call"),
        ("flows.api_call:api_call", [], "flows.api_call:api_call"),
        ("flows/api_call.py:api_call", here(), "flows.api_call:api_call"),
        ("./flows/service_job.py:service_job", here(), "flows.service_job:service_job"),
        ("flows.api_call.api_call", here(PROJECT_DIR / "flows" / ".."), "flows.api_call:api_call"),
    ],
)
def test_a_flow_of_the_project_is_handed_over_as_a_module_entrypoint(
    entrypoint: str, pull_steps: list[dict[str, Any]] | None, expected: str
) -> None:
    assert zygote_entrypoint(entrypoint, pull_steps) == expected


@pytest.mark.parametrize(
    ("entrypoint", "pull_steps"),
    [
        (None, None),
        ("", None),
        ("other.module:flow", None),  # not a module the zygote imported
        ("flowsx.api_call:api_call", None),
        ("/elsewhere/flows/api_call.py:api_call", None),  # a file outside the project
        ("flows/../tools/x.py:flow", here()),
        ("flows/sub/x.py:flow", here()),
        ("flows/api_call.py:not-a-name", here()),
        ("flows.api_call.api_call", here("/tmp")),  # runs elsewhere
        ("flows.api_call.api_call", here("{{ $SP_PROJECT_DIR }}")),  # not known here
        ("flows.api_call.api_call", [{"prefect.deployments.steps.git_clone": {"repository": "x"}}]),
        ("flows.api_call.api_call", [*here(), {"prefect.deployments.steps.run_shell_script": {}}]),
    ],
)
def test_any_other_deployment_loads_its_flow_as_prefect_does(
    entrypoint: str | None, pull_steps: list[dict[str, Any]] | None
) -> None:
    assert zygote_entrypoint(entrypoint, pull_steps) is None


def prepared(
    job_variables: dict[str, Any], entrypoint: str, pull_steps: list[dict[str, Any]] | None
) -> WarmProcessJobConfiguration:
    """The configuration the worker would start a run of this deployment with."""
    deployment = DeploymentResponse(
        id=uuid.uuid4(),
        name="d",
        flow_id=uuid.uuid4(),
        entrypoint=entrypoint,
        pull_steps=pull_steps,
        labels={},
    )
    flow_run = FlowRun(id=uuid.uuid4(), name="r", flow_id=deployment.flow_id)
    template = WarmProcessWorker.get_default_base_job_template()
    configuration: WarmProcessJobConfiguration = asyncio.run(
        WarmProcessJobConfiguration.from_template_and_values(template, job_variables)
    )
    configuration.prepare_for_flow_run(flow_run, deployment)
    return configuration


def test_the_job_runs_the_warm_engine_with_the_flow_handed_over() -> None:
    configuration = prepared({}, "flows/api_call.py:api_call", here())
    assert configuration.command == WARM_ENGINE
    assert configuration.env[FLOW_ENTRYPOINT_ENV] == "flows.api_call:api_call"
    assert configuration.working_dir == PROJECT_DIR


def test_a_deployment_from_storage_gets_no_entrypoint_and_runs_its_pull_steps() -> None:
    steps = [{"prefect.deployments.steps.git_clone": {"repository": "https://example.com/r"}}]
    configuration = prepared({}, "flows/api_call.py:api_call", steps)
    assert configuration.command == WARM_ENGINE
    assert FLOW_ENTRYPOINT_ENV not in configuration.env
    assert configuration.working_dir is None
