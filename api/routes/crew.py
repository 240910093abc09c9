"""The crew scheduler's HTTP contract: /api/scheduler, /api/crew-responses, plus PUT /api/users.

Translation only: the scheduler's start / stop / run-now are deployments.crew_scheduler's, the
stored answers db.crew's; this module speaks the crew scheduler's camelCase JSON.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, status
from fastapi.responses import JSONResponse
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
)
from pydantic.alias_generators import to_camel

from api.bounds import MAX_OFFSET, RowId, within_utc_range
from api.deps import CrewSchedulerDep, SessionDep, SettingsDep
from api.envelope import Envelope
from api.errors import CONFLICT
from db.crew import delete_crew_response, get_crew_response, list_crew_responses, upsert_users
from db.models import CrewResponse
from deployments.crew_scheduler import CrewSchedulerState

router = APIRouter(tags=["crew scheduler"])
# A year, in minutes: beyond that an interval is a typo.
MAX_INTERVAL_MINUTES = 525_600
MAX_USERS_PER_REQUEST = 10_000
# Query bound of a page (settings.max_page_size may lower it).
MAX_PAGE = 1_000

_CAMEL = ConfigDict(alias_generator=to_camel, populate_by_name=True, serialize_by_alias=True)


class SchedulerStatus(BaseModel):
    model_config = _CAMEL

    is_running: bool
    interval_minutes: int | float
    api_url: str | None


SchedulerAnswer = Envelope[SchedulerStatus | dict[str, Any]]


class SchedulerAction(BaseModel):
    """The crew scheduler's body: `start` (+ intervalMinutes), `stop` or `run-now`."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="forbid")

    action: Literal["start", "stop", "run-now"]
    interval_minutes: int | None = Field(default=None, ge=1, le=MAX_INTERVAL_MINUTES)


class CrewResponseOut(BaseModel):
    """One row of crew_responses in the crew scheduler's camelCase."""

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
    count: int  # rows in `data`, as the crew scheduler answers
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


IsoDate = Annotated[datetime, BeforeValidator(_utc), AfterValidator(within_utc_range)]


def _answer(state: CrewSchedulerState, message: str | None = None) -> SchedulerAnswer:
    return SchedulerAnswer(
        message=message,
        data=SchedulerStatus(
            is_running=state.is_running,
            interval_minutes=state.interval_minutes,
            api_url=state.api_url,
        ),
    )


@router.get("/api/scheduler", responses=CONFLICT)
async def scheduler_status(scheduler: CrewSchedulerDep) -> SchedulerAnswer:
    """Whether the crew schedule runs, its interval and the crew API URL."""
    return _answer(await scheduler.status())


@router.post("/api/scheduler", responses=CONFLICT)
async def scheduler_action(body: SchedulerAction, scheduler: CrewSchedulerDep) -> SchedulerAnswer:
    """start (every intervalMinutes), stop, or run-now, answered as the crew scheduler does."""
    if body.action == "start":
        state = await scheduler.start(body.interval_minutes)
        return _answer(state, f"Scheduler started with interval: {state.interval_minutes} minutes")
    if body.action == "stop":
        return _answer(await scheduler.stop(), "Scheduler stopped")
    run_id = await scheduler.run_now()
    return SchedulerAnswer(
        message="Scheduler task executed manually", data={"flowRunId": str(run_id)}
    )


class CrewResponsesQuery(BaseModel):
    """Filters and page of /api/crew-responses, in the crew scheduler's names."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    user_uid: str | None = None
    limit: int = Field(default=100, ge=1, le=MAX_PAGE)
    offset: int = Field(default=0, ge=0, le=MAX_OFFSET)
    start_date: IsoDate | None = None
    end_date: IsoDate | None = None

    @field_validator("start_date", "end_date")
    @classmethod
    def _utc_if_naive(cls, value: datetime | None) -> datetime | None:
        return value.replace(tzinfo=UTC) if value and value.tzinfo is None else value

    @field_validator("end_date")
    @classmethod
    def _not_before_start(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("start_date")
        if value is not None and start is not None and value < start:
            raise ValueError("endDate is before startDate")
        return value


@router.get("/api/crew-responses")
def crew_responses(
    query: Annotated[CrewResponsesQuery, Query()], session: SessionDep, settings: SettingsDep
) -> CrewResponsesAnswer:
    """Stored crew answers, newest first, filtered by user and creation time."""
    rows, total = list_crew_responses(
        session,
        user_uid=query.user_uid,
        start=query.start_date,
        end=query.end_date,
        limit=min(query.limit, settings.max_page_size),
        offset=query.offset,
    )
    data = [CrewResponseOut.of(r) for r in rows]
    return CrewResponsesAnswer(data=data, count=len(data), total=total)


def _not_found(response_id: int) -> JSONResponse:
    # The crew scheduler's error envelope, with FastAPI's `detail` beside it.
    message = f"Crew response {response_id} not found"
    return JSONResponse(
        {"success": False, "error": message, "detail": message},
        status_code=status.HTTP_404_NOT_FOUND,
    )


@router.get("/api/crew-responses/{response_id}", response_model=CrewResponseAnswer)
def crew_response(response_id: RowId, session: SessionDep) -> CrewResponseAnswer | JSONResponse:
    row = get_crew_response(session, response_id)
    if row is None:
        return _not_found(response_id)
    return CrewResponseAnswer(data=CrewResponseOut.of(row))


@router.delete("/api/crew-responses/{response_id}", response_model=None)
def remove_crew_response(response_id: RowId, session: SessionDep) -> dict[str, Any] | JSONResponse:
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
