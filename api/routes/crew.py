"""Seed 000's crew scheduler contract: /api/scheduler, /api/crew-responses, plus PUT /api/users.

The scheduler is one Prefect deployment of the crew-responses flow (settings.crew_schedule_name):
start = an interval schedule of N minutes, resumed; stop = paused; run-now = a flow run.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, cast

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field
from pydantic.alias_generators import to_camel

from api.deps import ScheduleServiceDep, SessionDep, SettingsDep
from db.crew import delete_crew_response, get_crew_response, list_crew_responses, upsert_users
from db.models import CrewResponse
from deployments.service import ScheduleNotFound, ScheduleView
from deployments.spec import IntervalTiming, SchedulePatch, ScheduleSpec
from settings import Settings

router = APIRouter(tags=["crew scheduler (seed 000)"])
PIPELINE = "crew"
# A year, in minutes: beyond that an interval is a typo.
MAX_INTERVAL_MINUTES = 525_600
MAX_USERS_PER_REQUEST = 10_000

_CAMEL = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)


class SchedulerStatus(BaseModel):
    model_config = _CAMEL

    is_running: bool
    interval_minutes: int | float
    api_url: str | None


class SchedulerAnswer(BaseModel):
    success: bool = True
    message: str | None = None
    data: SchedulerStatus | dict[str, Any] | None = None


class SchedulerAction(BaseModel):
    """The seed's body: `start` (+ intervalMinutes), `stop` or `run-now`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    action: Literal["start", "stop", "run-now"]
    interval_minutes: int | None = Field(default=None, ge=1, le=MAX_INTERVAL_MINUTES)


class CrewResponseOut(BaseModel):
    """One row of crew_responses in the seed's camelCase."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        serialize_by_alias=True,
        from_attributes=True,
    )

    id: int
    user_uid: str
    request_context: str | None
    request_goal: str | None
    response_data: Any
    created_at: datetime
    flow_run_id: str
    status: str
    error: str | None

    @classmethod
    def of(cls, row: CrewResponse) -> CrewResponseOut:
        return cls.model_validate({**row.model_dump(), "flow_run_id": str(row.flow_run_id)})


class CrewResponsesAnswer(BaseModel):
    success: bool = True
    data: list[CrewResponseOut]
    count: int  # rows in `data`, as the seed answers
    total: int  # rows matching the filter, for paging


class CrewResponseAnswer(BaseModel):
    success: bool = True
    data: CrewResponseOut


class UserIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    uid: str = Field(min_length=1, max_length=255)
    context: str | None = None
    goal: str | None = None


class UsersAnswer(BaseModel):
    success: bool = True
    count: int


_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _utc(value: Any) -> Any:
    """ISO 8601 as JavaScript's Date reads it: a bare date is midnight UTC, no offset is UTC."""
    if isinstance(value, str) and _DATE_ONLY.match(value):
        return f"{value}T00:00:00Z"
    return value


IsoDate = Annotated[datetime, BeforeValidator(_utc)]


def _as_utc(value: datetime | None) -> datetime | None:
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _minutes(view: ScheduleView | None, settings: Settings) -> int | float:
    if view is not None and isinstance(view.timing, IntervalTiming):
        minutes = view.timing.period.total_seconds() / 60
        return int(minutes) if minutes == int(minutes) else minutes
    return settings.crew_scheduler_interval_minutes


async def _api_url(view: ScheduleView | None, settings: Settings) -> str | None:
    block_name = view.parameters.get("crew_api") if view is not None else None
    if block_name:
        from blocks.crew import CrewApi

        try:
            return cast(CrewApi, await CrewApi.aload(block_name)).url
        except ValueError:
            return None
    return settings.crew_api_url


async def _find(service: ScheduleServiceDep, name: str) -> ScheduleView | None:
    try:
        view = await service.get(name)
    except ScheduleNotFound:
        return None
    if view.pipeline != PIPELINE:
        raise HTTPException(
            status.HTTP_409_CONFLICT, f"schedule {name!r} exists and is not a crew schedule"
        )
    return view


async def _status(view: ScheduleView | None, settings: Settings) -> SchedulerStatus:
    return SchedulerStatus(
        is_running=view is not None and not view.paused,
        interval_minutes=_minutes(view, settings),
        api_url=await _api_url(view, settings),
    )


async def _ensure(
    service: ScheduleServiceDep, settings: Settings, minutes: float, paused: bool
) -> ScheduleView:
    """Create the crew deployment with an interval of `minutes`."""
    spec = ScheduleSpec.model_validate(
        {
            "name": settings.crew_schedule_name,
            "pipeline": PIPELINE,
            "description": "Seed 000's crew scheduler: users' context and goal to the crew API",
            "timing": {"type": "interval", "every_minutes": minutes},
            "paused": paused,
        }
    )
    return await service.create(spec)


@router.get("/api/scheduler")
async def scheduler_status(service: ScheduleServiceDep, settings: SettingsDep) -> SchedulerAnswer:
    """Whether the crew schedule runs, its interval and the crew API URL."""
    view = await _find(service, settings.crew_schedule_name)
    return SchedulerAnswer(data=await _status(view, settings))


@router.post("/api/scheduler")
async def scheduler_action(
    body: SchedulerAction, service: ScheduleServiceDep, settings: SettingsDep
) -> SchedulerAnswer:
    """start (every intervalMinutes), stop, or run-now, answered as the seed does."""
    name = settings.crew_schedule_name
    view = await _find(service, name)
    if body.action == "start":
        minutes = body.interval_minutes or _minutes(view, settings)
        if view is None:
            view = await _ensure(service, settings, minutes, paused=False)
        else:
            timing = IntervalTiming(every_minutes=minutes)
            await service.update(name, SchedulePatch(timing=timing))
            view = await service.resume(name)
        return SchedulerAnswer(
            message=f"Scheduler started with interval: {_minutes(view, settings)} minutes",
            data=await _status(view, settings),
        )
    if body.action == "stop":
        if view is not None:
            view = await service.pause(name)
        return SchedulerAnswer(message="Scheduler stopped", data=await _status(view, settings))
    if view is None:
        await _ensure(service, settings, _minutes(None, settings), paused=True)
    run_id = await service.run_now(name, {})
    return SchedulerAnswer(
        message="Scheduler task executed manually", data={"flowRunId": str(run_id)}
    )


@router.get("/api/crew-responses")
def crew_responses(
    session: SessionDep,
    settings: SettingsDep,
    user_uid: Annotated[str | None, Query(alias="userUid")] = None,
    limit: Annotated[int, Query(ge=1)] = 100,
    offset: Annotated[int, Query(ge=0)] = 0,
    start_date: Annotated[IsoDate | None, Query(alias="startDate")] = None,
    end_date: Annotated[IsoDate | None, Query(alias="endDate")] = None,
) -> CrewResponsesAnswer:
    """Stored crew answers, newest first, filtered by user and creation time."""
    errors = []
    if limit > settings.max_page_size:
        errors.append(
            {
                "type": "less_than_equal",
                "loc": ("query", "limit"),
                "msg": f"Input should be less than or equal to {settings.max_page_size}",
                "input": limit,
            }
        )
    start, end = _as_utc(start_date), _as_utc(end_date)
    if start and end and start > end:
        errors.append(
            {
                "type": "value_error",
                "loc": ("query", "endDate"),
                "msg": "endDate is before startDate",
                "input": end_date,
            }
        )
    if errors:
        raise RequestValidationError(errors)
    rows, total = list_crew_responses(
        session, user_uid=user_uid, start=start, end=end, limit=limit, offset=offset
    )
    data = [CrewResponseOut.of(r) for r in rows]
    return CrewResponsesAnswer(data=data, count=len(data), total=total)


def _not_found(response_id: int) -> JSONResponse:
    # The seed's error envelope, with FastAPI's `detail` beside it.
    message = f"Crew response {response_id} not found"
    return JSONResponse(
        {"success": False, "error": message, "detail": message},
        status_code=status.HTTP_404_NOT_FOUND,
    )


@router.get("/api/crew-responses/{response_id}", response_model=CrewResponseAnswer)
def crew_response(response_id: int, session: SessionDep) -> CrewResponseAnswer | JSONResponse:
    row = get_crew_response(session, response_id)
    if row is None:
        return _not_found(response_id)
    return CrewResponseAnswer(data=CrewResponseOut.of(row))


@router.delete("/api/crew-responses/{response_id}", response_model=None)
def remove_crew_response(response_id: int, session: SessionDep) -> dict[str, Any] | JSONResponse:
    if not delete_crew_response(session, response_id):
        return _not_found(response_id)
    session.commit()
    return {"success": True, "message": f"Crew response {response_id} deleted"}


@router.put("/api/users")
def put_users(
    users: Annotated[list[UserIn], Field(max_length=MAX_USERS_PER_REQUEST)],
    session: SessionDep,
) -> UsersAnswer:
    """Create or update users by uid (bulk); the crew pipeline sends those with context or goal."""
    count = upsert_users(session.connection(), [u.model_dump() for u in users])
    session.commit()
    return UsersAnswer(count=count)
