"""Seed 001's job registry contract (/api/jobs/...), translated onto schedules of service_job."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from fastapi.exceptions import RequestValidationError
from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from api.deps import ScheduleServiceDep
from deployments.service import (
    RunView,
    ScheduleNotFound,
    ScheduleView,
    SpecError,
)
from deployments.spec import CronTiming, SchedulePatch, ScheduleSpec

router = APIRouter(prefix="/api/jobs", tags=["jobs (seed 001)"])
PIPELINE = "service_job"

_CAMEL = ConfigDict(
    alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
    populate_by_name=True,
    serialize_by_alias=True,
)
# Where our spec's fields stand in the seed's payload, for 422s that name the seed's field.
_SEED_FIELD: dict[tuple[str, ...], str] = {
    ("timing", "cron", "cron"): "cronExpression",
    ("timing", "cron", "timezone"): "timezone",
}


class JobRegistration(BaseModel):
    """A job as services register it (seed 001), plus optional timezone, timeout and retries."""

    model_config = _CAMEL

    name: str
    display_name: str | None = None
    description: str = ""
    cron_expression: str = Field(examples=["0 9 * * 1"])
    timezone: str = "UTC"
    enabled: bool = True
    job_type: str | None = None
    service: str = Field(examples=["email-service"])
    endpoint: str = Field(examples=["/api/jobs/weekly-digest"])
    config: dict[str, Any] = Field(default_factory=dict)
    timeout_seconds: float | None = None
    retries: int = 0
    retry_delay_seconds: int = 30

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "job_name": self.name,
            "service": self.service,
            "endpoint": self.endpoint,
            "config": self.config,
            "display_name": self.display_name,
        }
        if self.timeout_seconds is not None:
            params["timeout_seconds"] = self.timeout_seconds
        return params

    def tags(self) -> list[str]:
        return [f"service:{self.service}"] + (
            [f"job_type:{self.job_type}"] if self.job_type else []
        )

    def spec_fields(self) -> dict[str, Any]:
        return {
            "description": self.description,
            "timing": {"type": "cron", "cron": self.cron_expression, "timezone": self.timezone},
            "parameters": self.parameters(),
            "tags": self.tags(),
            "retries": self.retries,
            "retry_delay_seconds": self.retry_delay_seconds,
        }


class Job(BaseModel):
    """A registered job, read from its Prefect deployment (and its run history for details)."""

    model_config = _CAMEL

    name: str
    display_name: str | None
    description: str
    cron_expression: str | None
    timezone: str | None
    enabled: bool
    job_type: str | None
    service: str | None
    endpoint: str | None
    config: dict[str, Any]
    next_run_at: datetime | None
    last_run_at: datetime | None = None
    total_runs: int | None = None
    successful_runs: int | None = None
    failed_runs: int | None = None
    created_at: datetime | None
    updated_at: datetime | None


class JobEnvelope(BaseModel):
    success: bool = True
    message: str | None = None
    data: Job


class JobsEnvelope(BaseModel):
    success: bool = True
    data: list[Job]
    count: int


class Execution(BaseModel):
    """One run of a job, as the seed's scheduled_jobs rows."""

    model_config = _CAMEL

    id: str
    job_name: str
    status: str
    started_at: datetime | None
    completed_at: datetime | None
    duration_ms: int | None
    items_processed: int | None
    items_succeeded: int | None
    items_failed: int | None
    error_message: str | None
    metadata: dict[str, Any]
    triggered_by: str | None
    triggered_by_user: str | None


class HistoryEnvelope(BaseModel):
    success: bool = True
    data: list[Execution]
    count: int


class JobStats(BaseModel):
    model_config = _CAMEL

    job_name: str
    total_runs: int
    successful_runs: int
    failed_runs: int
    success_rate: float | None
    avg_duration_ms: int | None
    p95_duration_ms: int | None
    last_run_at: datetime | None
    next_run_at: datetime | None


class StatsEnvelope(BaseModel):
    success: bool = True
    data: JobStats


class TriggerRequest(BaseModel):
    model_config = _CAMEL

    triggered_by_user: str | None = None
    config: dict[str, Any] | None = None


class TriggerAnswer(BaseModel):
    model_config = _CAMEL

    success: bool = True
    message: str
    execution_id: str


class CronChange(BaseModel):
    model_config = _CAMEL

    cron_expression: str
    timezone: str | None = None


def _seed_errors(errors: list[dict[str, Any]]) -> RequestValidationError:
    """Our spec's field errors as errors on the seed payload's fields."""
    translated = []
    for error in errors:
        loc = tuple(str(part) for part in error["loc"])
        if loc[:1] == ("parameters",):
            loc = loc[1:]
        field = _SEED_FIELD.get(loc) or to_camel(loc[-1] if loc else "body")
        translated.append({**error, "loc": ["body", field]})
    return RequestValidationError(translated)


def _job(view: ScheduleView) -> Job:
    params = view.parameters
    tags = dict(t.split(":", 1) for t in view.tags if ":" in t)
    cron = view.timing if isinstance(view.timing, CronTiming) else None
    return Job(
        name=view.name,
        display_name=params.get("display_name"),
        description=view.description,
        cron_expression=cron.cron if cron else None,
        timezone=cron.timezone if cron else None,
        enabled=not view.paused,
        job_type=tags.get("job_type"),
        service=params.get("service") or tags.get("service"),
        endpoint=params.get("endpoint"),
        config=params.get("config") or {},
        next_run_at=view.next_runs[0] if view.next_runs else None,
        created_at=view.created,
        updated_at=view.updated,
    )


async def _job_view(service: ScheduleServiceDep, name: str) -> ScheduleView:
    view = await service.get(name)
    if view.pipeline != PIPELINE:
        raise ScheduleNotFound(name)
    return view


@router.post("/register", status_code=status.HTTP_201_CREATED)
async def register_job(
    registration: JobRegistration, service: ScheduleServiceDep, response: Response
) -> JobEnvelope:
    """Register a job, or update it in place when the name exists (its enabled state is kept)."""
    try:
        spec = ScheduleSpec.model_validate(
            {
                "name": registration.name,
                "pipeline": PIPELINE,
                "paused": not registration.enabled,
                **registration.spec_fields(),
            }
        )
        patch = SchedulePatch.model_validate(registration.spec_fields())
        view, created = await service.put(spec, patch)
    except ValidationError as exc:
        raise _seed_errors([dict(e) for e in exc.errors()]) from None
    except SpecError as exc:
        raise _seed_errors(exc.errors) from None
    if not created:
        response.status_code = status.HTTP_200_OK
    message = f"Job {registration.name} {'registered' if created else 'updated'}"
    return JobEnvelope(message=message, data=_job(view))


@router.get("")
async def list_jobs(
    service: ScheduleServiceDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> JobsEnvelope:
    """Registered jobs by name, a page at a time."""
    views, count = await service.list_schedules(pipeline=PIPELINE, limit=limit, offset=offset)
    return JobsEnvelope(data=[_job(v) for v in views], count=count)


@router.get("/{job_name}")
async def read_job(job_name: str, service: ScheduleServiceDep) -> JobEnvelope:
    """One job with its run counters."""
    view = await _job_view(service, job_name)
    stats = await service.stats(job_name)
    job = _job(view)
    job.last_run_at = stats.last_run_at
    job.total_runs = stats.total_runs - stats.by_state.get("SCHEDULED", 0)
    job.successful_runs = stats.by_state.get("COMPLETED", 0)
    job.failed_runs = stats.by_state.get("FAILED", 0) + stats.by_state.get("CRASHED", 0)
    return JobEnvelope(data=job)


@router.post("/{job_name}/trigger", status_code=status.HTTP_202_ACCEPTED)
async def trigger_job(
    job_name: str, service: ScheduleServiceDep, body: TriggerRequest | None = None
) -> TriggerAnswer:
    """Run the job now; its JobContext says triggeredBy: manual."""
    await _job_view(service, job_name)
    overrides: dict[str, Any] = {"triggered_by": "manual"}
    if body and body.triggered_by_user:
        overrides["triggered_by_user"] = body.triggered_by_user
    if body and body.config is not None:
        overrides["config"] = body.config
    try:
        run_id = await service.run_now(job_name, overrides)
    except SpecError as exc:
        raise _seed_errors(exc.errors) from None
    return TriggerAnswer(message=f"Job {job_name} triggered", execution_id=str(run_id))


@router.post("/{job_name}/enable")
async def enable_job(job_name: str, service: ScheduleServiceDep) -> JobEnvelope:
    """Resume the job's schedule (idempotent)."""
    await _job_view(service, job_name)
    return JobEnvelope(message=f"Job {job_name} enabled", data=_job(await service.resume(job_name)))


@router.post("/{job_name}/disable")
async def disable_job(job_name: str, service: ScheduleServiceDep) -> JobEnvelope:
    """Pause the job's schedule (idempotent); it can still be triggered."""
    await _job_view(service, job_name)
    return JobEnvelope(message=f"Job {job_name} disabled", data=_job(await service.pause(job_name)))


@router.delete("/{job_name}")
async def delete_job(job_name: str, service: ScheduleServiceDep) -> dict[str, Any]:
    """Delete the job; its history stays in Prefect until Prefect's retention removes it."""
    await _job_view(service, job_name)
    await service.delete(job_name)
    return {"success": True, "message": f"Job {job_name} deleted"}


@router.put("/{job_name}/cron")
async def update_cron(
    job_name: str, change: CronChange, service: ScheduleServiceDep
) -> JobEnvelope:
    """Change the job's cron expression (and time zone) in place."""
    view = await _job_view(service, job_name)
    timezone = change.timezone or getattr(view.timing, "timezone", "UTC")
    try:
        patch = SchedulePatch.model_validate(
            {"timing": {"type": "cron", "cron": change.cron_expression, "timezone": timezone}}
        )
        updated = await service.update(job_name, patch)
    except ValidationError as exc:
        raise _seed_errors([dict(e) for e in exc.errors()]) from None
    except SpecError as exc:
        raise _seed_errors(exc.errors) from None
    return JobEnvelope(message=f"Job {job_name} cron updated", data=_job(updated))


def _execution(job_name: str, run: RunView) -> Execution:
    outcome = run.outcome
    meta = outcome.metadata if outcome else {}
    status_name = {"COMPLETED": "completed", "RUNNING": "running", "PENDING": "running"}.get(
        run.state_type or "", "failed" if run.end_time else (run.state_type or "").lower()
    )
    return Execution(
        id=str(run.id),
        job_name=job_name,
        status=status_name,
        started_at=run.start_time,
        completed_at=run.end_time,
        duration_ms=int(run.duration_seconds * 1000) if run.duration_seconds is not None else None,
        items_processed=outcome.items_processed if outcome else None,
        items_succeeded=outcome.items_succeeded if outcome else None,
        items_failed=outcome.items_failed if outcome else None,
        error_message=(outcome.error if outcome else None)
        or (run.state_name if run.state_type in ("FAILED", "CRASHED") else None),
        metadata=meta.get("metadata") or {},
        triggered_by=meta.get("triggered_by") or run.parameters.get("triggered_by"),
        triggered_by_user=meta.get("triggered_by_user"),
    )


@router.get("/{job_name}/history")
async def job_history(
    job_name: str,
    service: ScheduleServiceDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Annotated[int, Query(ge=0)] = 0,
) -> HistoryEnvelope:
    """Executions, newest first, with status, timings, item counts, error and trigger."""
    await _job_view(service, job_name)
    runs, count = await service.runs(job_name, limit=limit, offset=offset)
    return HistoryEnvelope(data=[_execution(job_name, r) for r in runs], count=count)


@router.get("/{job_name}/stats")
async def job_stats(job_name: str, service: ScheduleServiceDep) -> StatsEnvelope:
    """Total, successful and failed runs, success rate, average and p95 duration."""
    await _job_view(service, job_name)
    stats = await service.stats(job_name)
    failed = stats.by_state.get("FAILED", 0) + stats.by_state.get("CRASHED", 0)
    successful = stats.by_state.get("COMPLETED", 0)

    def ms(seconds: float | None) -> int | None:
        return int(seconds * 1000) if seconds is not None else None

    return StatsEnvelope(
        data=JobStats(
            job_name=job_name,
            total_runs=stats.total_runs - stats.by_state.get("SCHEDULED", 0),
            successful_runs=successful,
            failed_runs=failed,
            success_rate=stats.success_rate,
            avg_duration_ms=ms(stats.mean_duration_seconds),
            p95_duration_ms=ms(stats.p95_duration_seconds),
            last_run_at=stats.last_run_at,
            next_run_at=stats.next_run_at,
        )
    )
