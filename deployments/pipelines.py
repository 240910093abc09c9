"""The pipelines a schedule can run: flow, entrypoint, parameter model and creation-time checks."""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from prefect.utilities.callables import parameter_schema
from prefect.utilities.importtools import import_object
from pydantic import BaseModel

from deployments.checks import (
    check_crew,
    check_destination,
    check_newsletter,
    check_secret_headers,
    check_service,
)
from deployments.errors import FieldErrors
from deployments.spec import PIPELINE_NAMES
from flows.api_call_params import ApiCallParameters
from flows.crew_params import CrewParameters
from flows.newsletter_params import NewsletterParameters
from flows.service_job_params import ServiceJobParameters

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

    def parameter_schema(self) -> dict[str, Any]:
        """The flow's parameter schema, so the Prefect UI's run form shows the real fields."""
        return _flow_parameter_schema(self.entrypoint)


@functools.cache
def _flow_parameter_schema(entrypoint: str) -> dict[str, Any]:
    # Imports the flow's module: once per process, at the first deployment of that pipeline.
    return parameter_schema(import_object(entrypoint).fn).model_dump_for_openapi()


PIPELINES: dict[str, Pipeline] = {
    "api_call": Pipeline(
        name="api_call",
        flow_name="api-call",
        entrypoint="flows.api_call.api_call",
        parameters=ApiCallParameters,
        checks=(check_destination, check_secret_headers),
    ),
    "crew": Pipeline(
        name="crew",
        flow_name="crew-responses",
        entrypoint="flows.crew_responses.crew_responses",
        parameters=CrewParameters,
        checks=(check_crew,),
    ),
    "service_job": Pipeline(
        name="service_job",
        flow_name="service-job",
        entrypoint="flows.service_job.service_job",
        parameters=ServiceJobParameters,
        checks=(check_service,),
    ),
    "newsletter": Pipeline(
        name="newsletter",
        flow_name="newsletter",
        entrypoint="flows.newsletter.newsletter",
        parameters=NewsletterParameters,
        checks=(check_newsletter,),
    ),
}
if tuple(PIPELINES) != PIPELINE_NAMES:  # the spec validates names without importing this
    raise RuntimeError(f"deployments.spec.PIPELINE_NAMES is not {tuple(PIPELINES)}")

FLOW_TO_PIPELINE = {p.flow_name: p for p in PIPELINES.values()}
