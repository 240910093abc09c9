"""What the schedule service answers: a schedule, a run and a schedule's stats, read from Prefect.

Each view is built from Prefect's own objects (a deployment, a flow run) plus our outcome
row, never from a copy of ours, so what operators change in the UI is what we report.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from prefect.client.schemas.objects import FlowRun
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.schedules import NoSchedule
from pydantic import BaseModel, Field

from db.models import RunOutcome
from deployments.controls import SKIP_TAG
from deployments.descriptions import default_description, given_description
from deployments.job_template import spec_settings_of
from deployments.pipelines import Pipeline
from deployments.prefect_schedules import from_prefect_schedule, next_fire_times
from deployments.spec import (
    PRIORITIES,
    Alerts,
    Backoff,
    Catchup,
    Collision,
    GlobalLimit,
    Priority,
    RateLimit,
    ScheduleSpec,
    Timing,
    Windows,
)

NEXT_RUNS = 3


class Outcome(BaseModel):
    """What a run did, as its flow recorded it in run_outcomes."""

    items_processed: int
    items_succeeded: int
    items_failed: int
    error: str | None
    metadata: dict[str, Any]

    @classmethod
    def of(cls, row: RunOutcome | None) -> Outcome | None:
        if row is None:
            return None
        return cls(
            items_processed=row.items_processed,
            items_succeeded=row.items_succeeded,
            items_failed=row.items_failed,
            error=row.error,
            metadata=row.meta,
        )


class RunView(BaseModel):
    """One flow run: Prefect's state and timings, and our outcome row."""

    id: uuid.UUID
    name: str
    schedule: str | None
    state_type: str | None
    state_name: str | None
    state_message: str | None = None
    expected_start_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    duration_seconds: float | None
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    outcome: Outcome | None = None


class Unreadable(BaseModel):
    """A deployment of ours a list could not show as a schedule, and why (the rest are listed)."""

    name: str
    error: str


class ScheduleView(BaseModel):
    """A schedule as Prefect has it now."""

    name: str
    pipeline: str
    deployment_id: uuid.UUID
    description: str
    timing: Timing
    parameters: dict[str, Any]
    paused: bool
    tags: list[str]
    retries: int
    retry_delay_seconds: int
    retry_backoff: Backoff = "fixed"
    retry_max_delay_seconds: int | None = None
    timeout_seconds: int | None = None
    priority: Priority = "normal"
    concurrency_limit: int | None
    collision: Collision
    windows: Windows | None = None
    catchup: Catchup = Field(default_factory=Catchup)
    jitter_seconds: int = 0
    limits: list[GlobalLimit] = Field(default_factory=list)
    rate_limit: RateLimit | None = None
    depends_on: list[str] = Field(default_factory=list)
    alerts: Alerts | None = None
    next_runs: list[datetime] = Field(
        default_factory=list,
        description="The next times the schedule fires (by Prefect's schedule maths); none "
        "while paused",
    )
    last_run: RunView | None = None
    created: datetime | None = None
    updated: datetime | None = None


class ScheduleStats(BaseModel):
    """Counters over a schedule's run history."""

    total_runs: int
    by_state: dict[str, int]
    success_rate: float | None
    mean_duration_seconds: float | None
    p95_duration_seconds: float | None
    items_processed: int
    items_succeeded: int
    items_failed: int
    last_run_at: datetime | None
    next_run_at: datetime | None

    def run_counts(self) -> tuple[int, int, int]:
        """Runs that started (every state but Scheduled), completed, and failed or crashed:
        what the compatible APIs call total, successful and failed."""
        by_state = self.by_state
        return (
            self.total_runs - by_state.get("SCHEDULED", 0),
            by_state.get("COMPLETED", 0),
            by_state.get("FAILED", 0) + by_state.get("CRASHED", 0),
        )


def run_duration(run: FlowRun) -> float | None:
    """Seconds from start to end (Prefect's run time while it has no end yet)."""
    if run.start_time and run.end_time:
        return (run.end_time - run.start_time).total_seconds()
    return run.total_run_time.total_seconds() if run.total_run_time else None


def run_view(run: FlowRun, schedule: str | None, outcome: RunOutcome | None) -> RunView:
    """A flow run and its outcome row as one answer."""
    return RunView(
        id=run.id,
        name=run.name,
        schedule=schedule,
        state_type=run.state_type.value if run.state_type else None,
        state_name=run.state_name,
        state_message=run.state.message if run.state else None,
        expected_start_time=run.expected_start_time,
        start_time=run.start_time,
        end_time=run.end_time,
        duration_seconds=run_duration(run) if run.end_time else None,
        parameters=run.parameters,
        tags=list(run.tags),
        outcome=Outcome.of(outcome),
    )


def schedules_active(deployment: DeploymentResponse) -> bool:
    """False when an operator paused every schedule (`prefect deployment schedule pause`)."""
    return not deployment.schedules or any(s.active for s in deployment.schedules)


async def schedule_view(deployment: DeploymentResponse, pipeline: Pipeline) -> ScheduleView:
    """The schedule a deployment is, with the next times its schedule fires."""
    schedule = deployment.schedules[0] if deployment.schedules else None
    prefect_schedule = schedule.schedule if schedule else None
    if isinstance(prefect_schedule, NoSchedule):
        prefect_schedule = None
    options = deployment.concurrency_options
    paused = deployment.paused or not schedules_active(deployment)
    limit = deployment.global_concurrency_limit
    timing = from_prefect_schedule(schedule.slug if schedule else None, prefect_schedule)
    queue = deployment.work_queue_name
    collision = options.collision_strategy.value.lower() if options else "enqueue"
    generated = default_description(pipeline.name, deployment.parameters, timing)
    return ScheduleView(
        name=deployment.name,
        pipeline=pipeline.name,
        deployment_id=deployment.id,
        description=given_description(deployment.description, generated),
        timing=timing,
        parameters=deployment.parameters,
        paused=paused,
        tags=[t for t in deployment.tags if t not in (pipeline.tag, SKIP_TAG)],
        **spec_settings_of(deployment.job_variables),
        priority=queue if queue in PRIORITIES else "normal",
        concurrency_limit=limit.limit if limit else None,
        collision="skip" if SKIP_TAG in deployment.tags else collision,
        created=deployment.created,
        updated=deployment.updated,
        next_runs=[] if paused else await next_fire_times(prefect_schedule, NEXT_RUNS),
    )


def spec_of(view: ScheduleView) -> ScheduleSpec:
    """The spec that would make this schedule (what a patch is laid over)."""
    fields = {
        name: getattr(view, name)
        for name in ScheduleSpec.model_fields
        if name in ScheduleView.model_fields
    }
    return ScheduleSpec.model_construct(**fields)
