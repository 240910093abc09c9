"""The pipelines a schedule can run: flow, entrypoint, parameter model and creation-time checks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from flows.api_call_params import ApiCallParameters
from flows.crew_params import CrewParameters
from flows.service_job_params import ServiceJobParameters

FieldErrors = list[dict[str, Any]]
Check = Callable[[Any], Awaitable[FieldErrors]]


@dataclass(frozen=True)
class Pipeline:
    """A pipeline as deployments/ needs it; the flow itself is imported only where it runs."""

    name: str
    flow_name: str
    entrypoint: str
    parameters: type[BaseModel]
    checks: tuple[Check, ...] = field(default=())

    @property
    def tag(self) -> str:
        return f"pipeline:{self.name}"


def _api_call_checks() -> tuple[Check, ...]:
    from deployments.checks import check_destination, check_secret_headers

    return (check_destination, check_secret_headers)


def _service_job_checks() -> tuple[Check, ...]:
    from deployments.checks import check_service

    return (check_service,)


def _crew_checks() -> tuple[Check, ...]:
    from deployments.checks import check_crew

    return (check_crew,)


PIPELINES: dict[str, Pipeline] = {
    "api_call": Pipeline(
        name="api_call",
        flow_name="api-call",
        entrypoint="flows.api_call.api_call",
        parameters=ApiCallParameters,
        checks=_api_call_checks(),
    ),
    "crew": Pipeline(
        name="crew",
        flow_name="crew-responses",
        entrypoint="flows.crew_responses.crew_responses",
        parameters=CrewParameters,
        checks=_crew_checks(),
    ),
    "service_job": Pipeline(
        name="service_job",
        flow_name="service-job",
        entrypoint="flows.service_job.service_job",
        parameters=ServiceJobParameters,
        checks=_service_job_checks(),
    ),
}

FLOW_TO_PIPELINE = {p.flow_name: p for p in PIPELINES.values()}
