"""The newsletter scheduler's HTTP contract (/api/v1/scheduler/...), on newsletter schedules.

Translation only, as the job registry's routes: a scheduler job is a deployment of the
`newsletter` flow (its id is the job id), an execution is one of its flow runs with the
results the flow recorded; answers are in the seed's `{"success", "message", "data"}`
envelope and 422s name the seed's fields (`schedule_time`, `cron_expression`, ...). A key
bound to workspaces sees its workspaces' jobs only: another workspace's job is a 404.
"""

from __future__ import annotations

import asyncio
import uuid
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from fastapi.exceptions import RequestValidationError
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import DeploymentResponse
from pydantic import BaseModel, Field, field_validator

from api.deps import Access, AccessDep, NewsletterServiceDep
from api.envelope import Envelope
from api.errors import spec_refusals
from deployments.controls import MANUAL_TAG
from deployments.descriptions import slug_words
from deployments.errors import ScheduleNotFound
from deployments.prefect_api import count_runs
from deployments.service import NOT_SCHEDULED, ScheduleService
from deployments.spec import (
    CronTiming,
    DailyTiming,
    RRuleTiming,
    SchedulePatch,
    ScheduleSpec,
    WeeklyTiming,
)
from deployments.views import RunView, ScheduleView
from flows.newsletter_params import ACTIONS, Action, WorkspaceId

router = APIRouter(prefix="/api/v1/scheduler", tags=["newsletter scheduler"])
PIPELINE = "newsletter"
ScheduleType = Literal["daily", "weekly", "cron", "custom"]
ExecutionStatus = Literal["pending", "running", "completed", "failed", "cancelled"]
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_FAILED = [StateType.FAILED, StateType.CRASHED]
# Jobs whose run counts a list reads from Prefect at once (three counts each).
COUNT_READS = 8


def _day_name(value: str) -> str:
    """A day by its English name or its first three letters, as its full lower-case name."""
    word = value.strip().lower()
    for day in DAYS:
        if word in (day, day[:3]):
            return day
    raise ValueError(f"{value!r} is not a day of the week (monday ... sunday)")


class _Timing(BaseModel):
    """The seed's schedule fields (all optional here: which are needed depends on the type)."""

    schedule_time: str | None = Field(default=None, examples=["08:00"])
    schedule_days: list[str] | None = Field(default=None, examples=[["monday"]])
    cron_expression: str | None = Field(default=None, examples=["0 8 * * 1-5"])
    rrule: str | None = Field(
        default=None,
        description="For schedule_type custom: an RFC 5545 rule",
        examples=["FREQ=MONTHLY;BYDAY=MO;BYSETPOS=1;BYHOUR=9;BYMINUTE=0"],
    )
    timezone: str | None = Field(default=None, examples=["America/New_York"])

    @field_validator("schedule_days")
    @classmethod
    def _days(cls, value: list[str] | None) -> list[str] | None:
        return [_day_name(d) for d in value] if value is not None else None


class SchedulerJobCreate(_Timing):
    """A scheduled newsletter job, as the seed's clients create it."""

    workspace_id: WorkspaceId
    name: str = Field(min_length=1, max_length=200, examples=["Daily AI Digest"])
    description: str | None = Field(default=None, max_length=2000)
    schedule_type: ScheduleType = "daily"
    actions: list[Action] = Field(default_factory=lambda: list(ACTIONS))
    config: dict[str, Any] = Field(default_factory=dict)
    is_enabled: bool = True


class SchedulerJobUpdate(_Timing):
    """A change to a job: only the fields given change."""

    name: str | None = Field(default=None, min_length=1, max_length=200)
    description: str | None = Field(default=None, max_length=2000)
    schedule_type: ScheduleType | None = None
    actions: list[Action] | None = None
    config: dict[str, Any] | None = None
    is_enabled: bool | None = None


class SchedulerJobResponse(BaseModel):
    """A job as its deployment has it now, with its run counters."""

    id: uuid.UUID
    workspace_id: str
    name: str
    description: str | None
    schedule_type: str
    schedule_time: str | None
    schedule_days: list[str] | None
    cron_expression: str | None
    rrule: str | None
    timezone: str | None
    actions: list[str]
    config: dict[str, Any]
    status: Literal["active", "paused"]
    is_enabled: bool
    next_run_at: datetime | None
    last_run_at: datetime | None
    total_runs: int
    successful_runs: int
    failed_runs: int
    deployment_name: str
    created_at: datetime | None
    updated_at: datetime | None


class SchedulerJobListResponse(BaseModel):
    jobs: list[SchedulerJobResponse]
    total: int


class SchedulerExecutionResponse(BaseModel):
    """One run of a job: state, timings, and what each action did."""

    id: uuid.UUID
    job_id: uuid.UUID
    workspace_id: str | None
    status: ExecutionStatus
    test_mode: bool
    triggered_by: Literal["schedule", "manual"]
    scheduled_for: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_seconds: float | None
    scrape_result: dict[str, Any] | None
    generate_result: dict[str, Any] | None
    send_result: dict[str, Any] | None
    error_message: str | None
    error_details: dict[str, Any] | None
    logs: list[str]


class SchedulerExecutionListResponse(BaseModel):
    executions: list[SchedulerExecutionResponse]
    total: int


class SchedulerExecutionStats(BaseModel):
    job_id: uuid.UUID
    total_executions: int
    successful_executions: int
    failed_executions: int
    success_rate: float | None = Field(description="Percent of finished executions completed")
    average_duration_seconds: float | None
    last_execution_at: datetime | None
    next_run_at: datetime | None


class RunJobNowRequest(BaseModel):
    test_mode: bool = False


class RunJobNowResponse(BaseModel):
    execution_id: uuid.UUID
    job_id: uuid.UUID
    status: Literal["queued"] = "queued"
    test_mode: bool
    message: str


# -- between the seed's fields and a schedule spec --------------------------------------------

# Where the spec's fields stand in the seed's payload, for 422s that name its field.
_SEED_FIELD: dict[tuple[str, ...], str] = {
    ("timing", "daily", "at"): "schedule_time",
    ("timing", "weekly", "at"): "schedule_time",
    ("timing", "weekly", "days"): "schedule_days",
    ("timing", "cron", "cron"): "cron_expression",
    ("timing", "rrule", "rrule"): "rrule",
    ("parameters", "job_name"): "name",
    ("description",): "description",
}


def _seed_loc(loc: tuple[str, ...]) -> list[str]:
    if loc in _SEED_FIELD:
        return [_SEED_FIELD[loc]]
    if loc[:1] == ("timing",) and loc[-1:] == ("timezone",):
        return ["timezone"]
    if loc[:1] == ("parameters",):
        return list(loc[1:]) or ["config"]
    return list(loc)


def _in_seed_terms() -> AbstractContextManager[None]:
    """Refusals of the spec as 422s on the seed's fields."""
    return spec_refusals(_seed_loc)


def _missing(field: str, schedule_type: str) -> RequestValidationError:
    return RequestValidationError(
        [
            {
                "loc": ["body", field],
                "msg": f"Field required for schedule_type {schedule_type}",
                "type": "missing",
            }
        ]
    )


def _timing(fields: dict[str, Any]) -> dict[str, Any]:
    """The spec's timing of the seed's schedule fields (422 naming a missing one)."""
    kind = fields.get("schedule_type") or "daily"
    zone = fields.get("timezone") or "UTC"
    needs = {"daily": ["schedule_time"], "weekly": ["schedule_days", "schedule_time"]}
    needs |= {"cron": ["cron_expression"], "custom": ["rrule"]}
    for field in needs[kind]:
        if not fields.get(field):
            raise _missing(field, kind)
    match kind:
        case "daily":
            return {"type": "daily", "at": fields["schedule_time"], "timezone": zone}
        case "weekly":
            days = [d[:3] for d in fields["schedule_days"]]
            return {"type": "weekly", "days": days, "at": fields["schedule_time"], "timezone": zone}
        case "cron":
            return {"type": "cron", "cron": fields["cron_expression"], "timezone": zone}
        case _:
            return {"type": "rrule", "rrule": fields["rrule"], "timezone": zone}


def _seed_timing(view: ScheduleView) -> dict[str, Any]:
    """The seed's schedule fields of a job's timing."""
    timing = view.timing
    fields: dict[str, Any] = dict.fromkeys(
        ("schedule_time", "schedule_days", "cron_expression", "rrule"), None
    )
    fields["timezone"] = getattr(timing, "timezone", None)
    match timing:
        case DailyTiming(at=at):
            fields |= {"schedule_type": "daily", "schedule_time": at}
        case WeeklyTiming(days=days, at=at):
            names = [next(d for d in DAYS if d.startswith(day)) for day in days]
            fields |= {"schedule_type": "weekly", "schedule_days": names, "schedule_time": at}
        case CronTiming(cron=cron):
            fields |= {"schedule_type": "cron", "cron_expression": cron}
        case RRuleTiming(rrule=rule):
            fields |= {"schedule_type": "custom", "rrule": rule}
        case _:  # changed in Prefect to another kind (an interval, none): shown as it is
            fields["schedule_type"] = timing.type
    return fields


def _slug(name: str) -> str:
    """A new job's deployment name: its words, and a suffix (names need not be unique)."""
    words = slug_words(name)[:40].strip("-")
    return f"newsletter-{words or 'job'}-{uuid.uuid4().hex[:8]}"


def _spec_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """What a job's seed fields are as a spec's settings (timing, parameters, tags)."""
    timing = _timing(fields)
    return {
        "description": fields.get("description") or "",
        "timing": timing,
        "parameters": {
            "job_name": fields["name"],
            "workspace_id": fields["workspace_id"],
            "actions": fields["actions"],
            "config": fields["config"],
            "timezone": timing["timezone"],
        },
        "tags": [f"workspace:{fields['workspace_id']}"],
    }


def _workspace_of(deployment: DeploymentResponse) -> str:
    return str((deployment.parameters or {}).get("workspace_id", ""))


async def _visible(
    service: ScheduleService, access: Access, job_id: uuid.UUID
) -> DeploymentResponse:
    """The job's deployment, if the caller may see it (another workspace's job is a 404)."""
    deployment = await service.by_id(job_id)
    if not access.sees(_workspace_of(deployment)):
        raise ScheduleNotFound(str(job_id), "job")
    return deployment


async def _counts(service: ScheduleService, deployment_id: uuid.UUID) -> tuple[int, int, int]:
    """Runs that started, completed, and failed or crashed (Prefect's exact counts, as
    ScheduleStats.run_counts counts them)."""
    ran, completed, failed = await asyncio.gather(
        count_runs(service.client, deployment_id, NOT_SCHEDULED),
        count_runs(service.client, deployment_id, [StateType.COMPLETED]),
        count_runs(service.client, deployment_id, _FAILED),
    )
    return ran, completed, failed


def _seed_fields(view: ScheduleView) -> dict[str, Any]:
    """What a job was created with, in the seed's fields, as its deployment has it now."""
    params = view.parameters
    return {
        "workspace_id": str(params.get("workspace_id", "")),
        "name": str(params.get("job_name", view.name)),
        "description": view.description or None,
        "actions": list(params.get("actions") or ACTIONS),
        "config": params.get("config") or {},
        **_seed_timing(view),
    }


async def _job(service: ScheduleService, view: ScheduleView) -> SchedulerJobResponse:
    total, successful, failed = await _counts(service, view.deployment_id)
    last = view.last_run
    return SchedulerJobResponse(
        id=view.deployment_id,
        status="paused" if view.paused else "active",
        is_enabled=not view.paused,
        next_run_at=view.next_runs[0] if view.next_runs else None,
        last_run_at=(last.start_time or last.expected_start_time) if last else None,
        total_runs=total,
        successful_runs=successful,
        failed_runs=failed,
        deployment_name=view.name,
        created_at=view.created,
        updated_at=view.updated,
        **_seed_fields(view),
    )


_STATUS: dict[str, ExecutionStatus] = {
    "COMPLETED": "completed",
    "RUNNING": "running",
    "FAILED": "failed",
    "CRASHED": "failed",
    "CANCELLED": "cancelled",
    "CANCELLING": "running",
}


def _status(run: RunView) -> ExecutionStatus:
    return _STATUS.get(run.state_type or "", "pending")


def _execution(job_id: uuid.UUID, run: RunView) -> SchedulerExecutionResponse:
    meta = run.outcome.metadata if run.outcome else {}
    error = run.outcome.error if run.outcome else None
    failed = run.state_type in ("FAILED", "CRASHED")
    config = run.parameters.get("config") or {}
    return SchedulerExecutionResponse(
        id=run.id,
        job_id=job_id,
        workspace_id=run.parameters.get("workspace_id"),
        status=_status(run),
        test_mode=bool(config.get("test_mode")),
        triggered_by="manual" if MANUAL_TAG in run.tags else "schedule",
        scheduled_for=run.expected_start_time,
        started_at=run.start_time,
        completed_at=run.end_time,
        duration_seconds=run.duration_seconds,
        scrape_result=meta.get("scrape_result"),
        generate_result=meta.get("generate_result"),
        send_result=meta.get("send_result"),
        error_message=error or (run.state_message if failed else None),
        error_details={"state": run.state_name, "message": run.state_message} if failed else None,
        logs=list(meta.get("logs") or []),
    )


# -- the seed's ten endpoints ----------------------------------------------------------------


@router.post("", status_code=status.HTTP_201_CREATED)
async def create_scheduler_job(
    request: SchedulerJobCreate, service: NewsletterServiceDep, access: AccessDep
) -> Envelope[SchedulerJobResponse]:
    """Create a job: a deployment of the newsletter flow on the job's schedule."""
    access.require(request.workspace_id)
    with _in_seed_terms():
        spec = ScheduleSpec.model_validate(
            {
                "name": _slug(request.name),
                "pipeline": PIPELINE,
                "paused": not request.is_enabled,
                **_spec_fields(request.model_dump()),
            }
        )
        view = await service.create(spec)
    return Envelope(message=f"Job {request.name} created", data=await _job(service, view))


@router.get("/workspaces/{workspace_id}")
async def list_scheduler_jobs(
    workspace_id: WorkspaceId,
    service: NewsletterServiceDep,
    access: AccessDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 100,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
) -> Envelope[SchedulerJobListResponse]:
    """The workspace's jobs."""
    access.require(workspace_id)
    views, total, _ = await service.list_schedules(
        tag=f"workspace:{workspace_id}", limit=limit, offset=offset
    )
    gate = asyncio.Semaphore(COUNT_READS)

    async def job(view: ScheduleView) -> SchedulerJobResponse:
        async with gate:
            return await _job(service, view)

    jobs = await asyncio.gather(*(job(v) for v in views))
    return Envelope(data=SchedulerJobListResponse(jobs=list(jobs), total=total))


@router.get("/{job_id}")
async def get_scheduler_job(
    job_id: uuid.UUID, service: NewsletterServiceDep, access: AccessDep
) -> Envelope[SchedulerJobResponse]:
    """One job with its next run and counters."""
    deployment = await _visible(service, access, job_id)
    return Envelope(data=await _job(service, await service.get(deployment.name)))


@router.put("/{job_id}")
async def update_scheduler_job(
    job_id: uuid.UUID,
    request: SchedulerJobUpdate,
    service: NewsletterServiceDep,
    access: AccessDep,
) -> Envelope[SchedulerJobResponse]:
    """Change a job in place (its history stays); `is_enabled` pauses or resumes it."""
    deployment = await _visible(service, access, job_id)
    given = request.model_dump(exclude_unset=True)
    enabled = given.pop("is_enabled", None)
    if given:
        current = _seed_fields(await service.get(deployment.name))
        if "schedule_type" in given:  # a new type brings its own fields; drop the old ones
            for field in ("schedule_time", "schedule_days", "cron_expression", "rrule"):
                current[field] = None
        merged = {**current, **given}
        with _in_seed_terms():
            patch = SchedulePatch.model_validate(_spec_fields(merged))
            await service.update(deployment.name, patch)
    if enabled is True:
        await service.resume(deployment.name)
    elif enabled is False:
        await service.pause(deployment.name)
    view = await service.get(deployment.name)
    return Envelope(message="Job updated", data=await _job(service, view))


@router.delete("/{job_id}")
async def delete_scheduler_job(
    job_id: uuid.UUID, service: NewsletterServiceDep, access: AccessDep
) -> Envelope[dict[str, Any]]:
    """Delete the job; the issues it made stay."""
    deployment = await _visible(service, access, job_id)
    await service.delete(deployment.name)
    return Envelope(message="Job deleted", data={"id": str(job_id), "deleted": True})


@router.post("/{job_id}/pause")
async def pause_scheduler_job(
    job_id: uuid.UUID, service: NewsletterServiceDep, access: AccessDep
) -> Envelope[SchedulerJobResponse]:
    """Pause the job (idempotent); it can still be run now."""
    deployment = await _visible(service, access, job_id)
    view = await service.pause(deployment.name)
    return Envelope(message="Job paused", data=await _job(service, view))


@router.post("/{job_id}/resume")
async def resume_scheduler_job(
    job_id: uuid.UUID, service: NewsletterServiceDep, access: AccessDep
) -> Envelope[SchedulerJobResponse]:
    """Resume the job (idempotent): Prefect plans its next runs again."""
    deployment = await _visible(service, access, job_id)
    view = await service.resume(deployment.name)
    return Envelope(message="Job resumed", data=await _job(service, view))


@router.post("/{job_id}/run-now", status_code=status.HTTP_202_ACCEPTED)
async def run_job_now(
    job_id: uuid.UUID,
    service: NewsletterServiceDep,
    access: AccessDep,
    request: RunJobNowRequest | None = None,
) -> Envelope[RunJobNowResponse]:
    """Run the job now; `test_mode` stores the issue and mails only the test recipients."""
    deployment = await _visible(service, access, job_id)
    test_mode = bool(request and request.test_mode)
    overrides = {"config": {"test_mode": True}} if test_mode else None
    run_id = await service.run_now(deployment.name, overrides)
    answer = RunJobNowResponse(
        execution_id=run_id,
        job_id=job_id,
        test_mode=test_mode,
        message="Job queued for execution" + (" in test mode" if test_mode else ""),
    )
    return Envelope(message=answer.message, data=answer)


@router.get("/{job_id}/history")
async def get_job_execution_history(
    job_id: uuid.UUID,
    service: NewsletterServiceDep,
    access: AccessDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
) -> Envelope[SchedulerExecutionListResponse]:
    """Executions newest first, with each action's result, the error and the log lines."""
    deployment = await _visible(service, access, job_id)
    runs, total = await service.runs(deployment.name, limit=limit)
    executions = [_execution(job_id, r) for r in runs]
    return Envelope(data=SchedulerExecutionListResponse(executions=executions, total=total))


@router.get("/{job_id}/stats")
async def get_job_execution_stats(
    job_id: uuid.UUID, service: NewsletterServiceDep, access: AccessDep
) -> Envelope[SchedulerExecutionStats]:
    """Total, successful and failed executions, success rate and average duration."""
    deployment = await _visible(service, access, job_id)
    stats = await service.stats(deployment.name)
    total, successful, failed = stats.run_counts()
    return Envelope(
        data=SchedulerExecutionStats(
            job_id=job_id,
            total_executions=total,
            successful_executions=successful,
            failed_executions=failed,
            success_rate=round(stats.success_rate * 100, 1)
            if stats.success_rate is not None
            else None,
            average_duration_seconds=stats.mean_duration_seconds,
            last_execution_at=stats.last_run_at,
            next_run_at=stats.next_run_at,
        )
    )
