"""Schedules: create, read, change, pause, resume, run now, delete, history and stats."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Response, status
from pydantic import BaseModel, Field

from api.bounds import Offset
from api.deps import ScheduleServiceDep, SettingsDep
from api.errors import CONFLICT
from deployments.spec import SchedulePatch, ScheduleSpec
from deployments.views import RunView, ScheduleStats, ScheduleView, Unreadable

router = APIRouter(prefix="/api/schedules", tags=["schedules"])

StateFilter = Literal[
    "SCHEDULED",
    "PENDING",
    "RUNNING",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "CRASHED",
    "PAUSED",
    "CANCELLING",
]


class SchedulesPublic(BaseModel):
    data: list[ScheduleView]
    count: int
    # Deployments of this page that could not be read as schedules (listed, not hidden).
    unreadable: list[Unreadable] = []


class RunsPublic(BaseModel):
    data: list[RunView]
    count: int


class RunRequest(BaseModel):
    parameters: dict[str, Any] = Field(default_factory=dict)
    ignore_windows: bool = Field(
        default=False, description="Start now even outside the schedule's execution windows"
    )


class BackfillRequest(BaseModel):
    start: datetime = Field(description="The first time included; naive: the schedule's zone")
    end: datetime = Field(description="The first time excluded")


class BackfillAnswer(BaseModel):
    runs: int
    flow_run_ids: list[uuid.UUID]
    scheduled_times: list[datetime]


class RunStarted(BaseModel):
    flow_run_id: uuid.UUID


def _limit(settings: SettingsDep, limit: int) -> int:
    return min(limit, settings.max_page_size)


@router.post("", status_code=status.HTTP_201_CREATED, responses=CONFLICT)
async def create_schedule(spec: ScheduleSpec, service: ScheduleServiceDep) -> ScheduleView:
    """Create a schedule (a Prefect deployment); 409 if the name exists, 422 names bad fields."""
    return await service.create(spec)


@router.get("")
async def list_schedules(
    service: ScheduleServiceDep,
    settings: SettingsDep,
    pipeline: str | None = None,
    paused: bool | None = None,
    tag: str | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> SchedulesPublic:
    """A page of schedules by name, with the total for the filter."""
    views, count, unreadable = await service.list_schedules(
        pipeline=pipeline, paused=paused, tag=tag, limit=_limit(settings, limit), offset=offset
    )
    return SchedulesPublic(data=views, count=count, unreadable=unreadable)


@router.get("/{name}")
async def read_schedule(name: str, service: ScheduleServiceDep) -> ScheduleView:
    """One schedule: its spec as Prefect has it, pause state, next runs and last run."""
    return await service.get(name)


@router.patch("/{name}")
async def update_schedule(
    name: str, patch: SchedulePatch, service: ScheduleServiceDep
) -> ScheduleView:
    """Change timing, parameters, description or limits in place; pause state is kept."""
    return await service.update(name, patch)


@router.delete("/{name}", status_code=status.HTTP_204_NO_CONTENT)
async def delete_schedule(name: str, service: ScheduleServiceDep) -> Response:
    """Delete the schedule; the records it produced stay."""
    await service.delete(name)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{name}/pause")
async def pause_schedule(name: str, service: ScheduleServiceDep) -> ScheduleView:
    """Pause the schedule (idempotent)."""
    return await service.pause(name)


@router.post("/{name}/resume")
async def resume_schedule(name: str, service: ScheduleServiceDep) -> ScheduleView:
    """Resume the schedule (idempotent)."""
    return await service.resume(name)


@router.post("/{name}/run", status_code=status.HTTP_202_ACCEPTED, responses=CONFLICT)
async def run_schedule(
    name: str,
    service: ScheduleServiceDep,
    body: RunRequest | None = None,
    idempotency_key: Annotated[str | None, Header(max_length=200)] = None,
) -> RunStarted:
    """Run now, optionally with parameters merged over the schedule's own.

    Send an `Idempotency-Key` header to retry safely: the same key gives the same run.
    """
    run_id = await service.run_now(
        name,
        body.parameters if body else None,
        idempotency_key,
        ignore_windows=bool(body and body.ignore_windows),
    )
    return RunStarted(flow_run_id=run_id)


@router.post("/{name}/backfill", status_code=status.HTTP_201_CREATED)
async def backfill_schedule(
    name: str, body: BackfillRequest, service: ScheduleServiceDep, settings: SettingsDep
) -> BackfillAnswer:
    """Create the runs the schedule would have made from `start` to `end`, each at its time.

    Asked twice for the same range, it answers the same runs (none is created twice); more
    than MAX_BACKFILL_RUNS is a 422. Backfilled runs (made after their time) are never
    cancelled by catch-up.
    """
    runs = await service.backfill(name, body.start, body.end, settings.max_backfill_runs)
    return BackfillAnswer(
        runs=len(runs),
        flow_run_ids=[r.id for r in runs],
        scheduled_times=[r.expected_start_time for r in runs if r.expected_start_time],
    )


@router.get("/{name}/runs")
async def list_schedule_runs(
    name: str,
    service: ScheduleServiceDep,
    settings: SettingsDep,
    state: StateFilter | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Offset = 0,
) -> RunsPublic:
    """Run history, newest first, each with its outcome."""
    runs, count = await service.runs(
        name, state=state, limit=_limit(settings, limit), offset=offset
    )
    return RunsPublic(data=runs, count=count)


@router.get("/{name}/stats")
async def schedule_stats(name: str, service: ScheduleServiceDep) -> ScheduleStats:
    """Totals by state, success rate, mean and p95 duration, item counts."""
    return await service.stats(name)
