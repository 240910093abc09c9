"""The service-job registry's HTTP contract (/api/jobs/...), on schedules of service_job.

Translation only: a job is a schedule of the service_job pipeline (the scoped
ScheduleService of api.deps), answered in the registry's camelCase envelope; errors name the
registry's fields (`cronExpression`) and its nouns (a job, not a schedule).
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response, status
from pydantic import AliasGenerator, BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from api.bounds import Offset
from api.deps import JobServiceDep
from api.envelope import Envelope, ListEnvelope
from api.errors import CONFLICT, spec_refusals
from deployments.spec import CronTiming, SchedulePatch, ScheduleSpec
from deployments.views import RunView, ScheduleStats, ScheduleView, Unreadable

router = APIRouter(prefix="/api/jobs", tags=["service-job registry"])
PIPELINE = "service_job"

_CAMEL = ConfigDict(
    alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
    populate_by_name=True,
    serialize_by_alias=True,
)
# Where our spec's fields stand in the registry's payload, for 422s that name its field.
_REGISTRY_FIELD: dict[tuple[str, ...], str] = {
    ("timing", "cron", "cron"): "cronExpression",
    ("timing", "cron", "timezone"): "timezone",
}


class JobRegistration(BaseModel):
    """A job as services register it, plus optional timezone, timeout and retries."""

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


class JobList(ListEnvelope[Job]):
    """A page of jobs; `unreadable` names deployments that could not be read as jobs."""

    unreadable: list[Unreadable] = []


class Execution(BaseModel):
    """One run of a job, as the registry's execution rows."""

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


def _registry_loc(loc: tuple[str, ...]) -> list[str]:
    """Where a spec field stands in the registry's payload (camelCase, parameters flattened)."""
    if loc[:1] == ("parameters",):
        loc = loc[1:]
    return [_REGISTRY_FIELD.get(loc) or to_camel(loc[-1] if loc else "body")]


def _in_registry_terms() -> AbstractContextManager[None]:
    """Refusals of the spec as 422s on the registry's fields."""
    return spec_refusals(_registry_loc)


def _job(view: ScheduleView, stats: ScheduleStats | None = None) -> Job:
    params = view.parameters
    tags = dict(t.split(":", 1) for t in view.tags if ":" in t)
    cron = view.timing if isinstance(view.timing, CronTiming) else None
    job = Job(
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
    if stats is not None:
        job.last_run_at = stats.last_run_at
        job.total_runs, job.successful_runs, job.failed_runs = stats.run_counts()
    return job


def _ms(seconds: float | None) -> int | None:
    return int(seconds * 1000) if seconds is not None else None


def _job_stats(job_name: str, stats: ScheduleStats) -> JobStats:
    total, successful, failed = stats.run_counts()
    return JobStats(
        job_name=job_name,
        total_runs=total,
        successful_runs=successful,
        failed_runs=failed,
        success_rate=stats.success_rate,
        avg_duration_ms=_ms(stats.mean_duration_seconds),
        p95_duration_ms=_ms(stats.p95_duration_seconds),
        last_run_at=stats.last_run_at,
        next_run_at=stats.next_run_at,
    )


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
        duration_ms=_ms(run.duration_seconds),
        items_processed=outcome.items_processed if outcome else None,
        items_succeeded=outcome.items_succeeded if outcome else None,
        items_failed=outcome.items_failed if outcome else None,
        error_message=(outcome.error if outcome else None)
        or (run.state_name if run.state_type in ("FAILED", "CRASHED") else None),
        metadata=meta.get("metadata") or {},
        triggered_by=meta.get("triggered_by") or run.parameters.get("triggered_by"),
        triggered_by_user=meta.get("triggered_by_user"),
    )


@router.post("/register", status_code=status.HTTP_201_CREATED, responses=CONFLICT)
async def register_job(
    registration: JobRegistration, service: JobServiceDep, response: Response
) -> Envelope[Job]:
    """Register a job, or update it in place when the name exists (its enabled state is kept)."""
    with _in_registry_terms():
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
    if not created:
        response.status_code = status.HTTP_200_OK
    message = f"Job {registration.name} {'registered' if created else 'updated'}"
    return Envelope(message=message, data=_job(view))


@router.get("")
async def list_jobs(
    service: JobServiceDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> JobList:
    """Registered jobs by name, a page at a time."""
    views, count, unreadable = await service.list_schedules(limit=limit, offset=offset)
    return JobList(data=[_job(v) for v in views], count=count, unreadable=unreadable)


@router.get("/{job_name}")
async def read_job(job_name: str, service: JobServiceDep) -> Envelope[Job]:
    """One job with its run counters."""
    view, stats = await service.details(job_name)
    return Envelope(data=_job(view, stats))


@router.post("/{job_name}/trigger", status_code=status.HTTP_202_ACCEPTED, responses=CONFLICT)
async def trigger_job(
    job_name: str, service: JobServiceDep, body: TriggerRequest | None = None
) -> TriggerAnswer:
    """Run the job now; its JobContext says triggeredBy: manual."""
    overrides: dict[str, Any] = {"triggered_by": "manual"}
    if body and body.triggered_by_user:
        overrides["triggered_by_user"] = body.triggered_by_user
    if body and body.config is not None:
        overrides["config"] = body.config
    with _in_registry_terms():
        run_id = await service.run_now(job_name, overrides)
    return TriggerAnswer(message=f"Job {job_name} triggered", execution_id=str(run_id))


@router.post("/{job_name}/enable")
async def enable_job(job_name: str, service: JobServiceDep) -> Envelope[Job]:
    """Resume the job's schedule (idempotent)."""
    return Envelope(message=f"Job {job_name} enabled", data=_job(await service.resume(job_name)))


@router.post("/{job_name}/disable")
async def disable_job(job_name: str, service: JobServiceDep) -> Envelope[Job]:
    """Pause the job's schedule (idempotent); it can still be triggered."""
    return Envelope(message=f"Job {job_name} disabled", data=_job(await service.pause(job_name)))


@router.delete("/{job_name}")
async def delete_job(job_name: str, service: JobServiceDep) -> dict[str, Any]:
    """Delete the job; its history stays in Prefect until Prefect's retention removes it."""
    await service.delete(job_name)
    return {"success": True, "message": f"Job {job_name} deleted"}


@router.put("/{job_name}/cron")
async def update_cron(job_name: str, change: CronChange, service: JobServiceDep) -> Envelope[Job]:
    """Change the job's cron expression (and time zone: unchanged when not given) in place."""

    def new_timing(current: ScheduleSpec) -> SchedulePatch:
        timezone = change.timezone or getattr(current.timing, "timezone", "UTC")
        timing = {"type": "cron", "cron": change.cron_expression, "timezone": timezone}
        return SchedulePatch.model_validate({"timing": timing})

    with _in_registry_terms():
        updated = await service.update(job_name, new_timing)
    return Envelope(message=f"Job {job_name} cron updated", data=_job(updated))


@router.get("/{job_name}/history")
async def job_history(
    job_name: str,
    service: JobServiceDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> ListEnvelope[Execution]:
    """Executions, newest first, with status, timings, item counts, error and trigger."""
    runs, count = await service.runs(job_name, limit=limit, offset=offset)
    return ListEnvelope(data=[_execution(job_name, r) for r in runs], count=count)


@router.get("/{job_name}/stats")
async def job_stats(job_name: str, service: JobServiceDep) -> Envelope[JobStats]:
    """Total, successful and failed runs, success rate, average and p95 duration."""
    return Envelope(data=_job_stats(job_name, await service.stats(job_name)))
