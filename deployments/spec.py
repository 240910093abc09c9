"""The schedule spec: one validated model per schedule, checked before anything reaches Prefect."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, available_timezones

from dateutil.rrule import rrulestr
from prefect._internal.schemas import validators
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# The pipelines a schedule can run (deployments/pipelines.py says what each is, and checks
# that it defines exactly these): named here so the spec validates without importing them.
PIPELINE_NAMES = ("api_call", "crew", "service_job", "newsletter")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]


@cache
def _zones() -> frozenset[str]:
    """The IANA zones Prefect accepts (the list it checks against), as a set, computed once."""
    return frozenset(available_timezones())


def check_timezone(value: str) -> str:
    """An IANA time zone name, e.g. Europe/Paris."""
    if value not in _zones():
        raise ValueError(f"unknown time zone {value!r} (use an IANA name such as Europe/Paris)")
    return value


def check_cron(value: str) -> str:
    """A standard 5-field cron expression."""
    value = " ".join(value.split())
    if len(value.split(" ")) != 5:
        raise ValueError(
            f"{value!r} is not a 5-field cron expression (minute hour day month weekday)"
        )
    try:
        return validators.validate_cron_string(value)  # cached by prefect_patches
    except ValueError as exc:
        raise ValueError(f"invalid cron expression {value!r}: {exc}") from None


def check_hhmm(value: str) -> str:
    if not HHMM.match(value):
        raise ValueError(f"{value!r} is not a time of day as HH:MM (00:00 to 23:59)")
    return value


def check_rrule(value: str) -> str:
    try:
        rrulestr(value, cache=False)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid RFC 5545 rule: {exc}") from None
    return value


TimeZone = Annotated[str, AfterValidator(check_timezone)]
TimeOfDay = Annotated[str, AfterValidator(check_hhmm), Field(examples=["07:30"])]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CronTiming(_Strict):
    type: Literal["cron"] = "cron"
    cron: Annotated[str, AfterValidator(check_cron)] = Field(examples=["0 */6 * * *"])
    timezone: TimeZone = "UTC"


# The instants a schedule may name (an anchor, a one-off run): Prefect's schedule maths and
# the time-zone database work within these, in every zone (0001-01-01 in America/New_York is
# before any UTC offset Prefect can apply, and failed only once Prefect had the deployment).
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
# A period Prefect's scheduler can add to a date and store (about 100 years at most).
MAX_PERIOD = timedelta(days=36_600)


def in_schedule_range(value: datetime, timezone: str) -> datetime:
    """`value` (a naive one read in `timezone`) when its instant is in EARLIEST..LATEST."""
    try:
        when = aware(value, timezone).astimezone(UTC)
    except (OverflowError, ValueError):
        when = None
    if when is None or not EARLIEST <= when < LATEST:
        raise ValueError(
            f"{value.isoformat()} is out of range: give a time from "
            f"{EARLIEST.date()} to {LATEST.date()} (UTC)"
        )
    return value


class IntervalTiming(_Strict):
    type: Literal["interval"] = "interval"
    every_seconds: float | None = Field(default=None, gt=0, le=MAX_PERIOD.total_seconds())
    every_minutes: float | None = Field(default=None, gt=0, le=MAX_PERIOD.total_seconds() / 60)
    timezone: TimeZone = "UTC"
    anchor: datetime | None = Field(default=None, description="A start the runs align to")

    @model_validator(mode="after")
    def _one_period(self) -> IntervalTiming:
        if (self.every_seconds is None) == (self.every_minutes is None):
            raise ValueError("give exactly one of every_seconds and every_minutes")
        return self

    @field_validator("anchor")
    @classmethod
    def _anchor_in_range(cls, value: datetime | None, info: ValidationInfo) -> datetime | None:
        # `timezone` comes first in the model, so it is validated (and known) here.
        if value is None:
            return None
        return in_schedule_range(value, info.data.get("timezone", "UTC"))

    @property
    def period(self) -> timedelta:
        if self.every_seconds is not None:
            return timedelta(seconds=self.every_seconds)
        return timedelta(minutes=self.every_minutes or 0)


class DailyTiming(_Strict):
    type: Literal["daily"] = "daily"
    at: TimeOfDay
    timezone: TimeZone = "UTC"


class WeeklyTiming(_Strict):
    type: Literal["weekly"] = "weekly"
    days: list[Weekday] = Field(min_length=1, examples=[["mon", "thu"]])
    at: TimeOfDay
    timezone: TimeZone = "UTC"

    @field_validator("days", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return (
            [d.lower()[:3] if isinstance(d, str) else d for d in value]
            if isinstance(value, list)
            else value
        )


class RRuleTiming(_Strict):
    type: Literal["rrule"] = "rrule"
    rrule: Annotated[str, AfterValidator(check_rrule)] = Field(
        examples=["FREQ=MONTHLY;BYDAY=MO;BYSETPOS=1;BYHOUR=9;BYMINUTE=0"]
    )
    timezone: TimeZone = "UTC"


class OnceTiming(_Strict):
    type: Literal["once"] = "once"
    timezone: TimeZone = "UTC"
    at: datetime = Field(description="When to run; a naive time is read in `timezone`")

    @field_validator("at")
    @classmethod
    def _in_future(cls, value: datetime, info: ValidationInfo) -> datetime:
        in_schedule_range(value, info.data.get("timezone", "UTC"))
        when = aware(value, info.data.get("timezone", "UTC"))
        if when <= datetime.now(UTC):
            raise ValueError(f"{when.isoformat()} is in the past")
        return value

    @property
    def when(self) -> datetime:
        """`at` as an aware datetime."""
        return aware(self.at, self.timezone)


def aware(value: datetime, timezone: str) -> datetime:
    """`value` as is when aware, else read as a wall-clock time in `timezone`."""
    return value if value.tzinfo else value.replace(tzinfo=ZoneInfo(timezone))


class ManualTiming(_Strict):
    type: Literal["manual"] = "manual"


Timing = Annotated[
    CronTiming
    | IntervalTiming
    | DailyTiming
    | WeeklyTiming
    | RRuleTiming
    | OnceTiming
    | ManualTiming,
    Field(discriminator="type"),
]


def check_slug(value: str) -> str:
    if not SLUG.match(value):
        raise ValueError(f"{value!r} is not a slug (lowercase letters, digits and -, max 63)")
    return value


Slug = Annotated[str, AfterValidator(check_slug)]


class SpecSettings(_Strict):
    """What a schedule may change after creation: everything but its name and pipeline."""

    description: str = Field(default="", max_length=2000)
    timing: Timing = Field(default_factory=ManualTiming)
    parameters: dict[str, Any] = Field(default_factory=dict)
    retries: int = Field(default=0, ge=0, le=10, description="Flow-level retries of a failed run")
    retry_delay_seconds: int = Field(default=30, ge=0, le=86_400)
    concurrency_limit: int | None = Field(default=None, ge=1, le=1000)
    collision: Literal["enqueue", "cancel_new"] = "enqueue"
    tags: list[str] = Field(default_factory=list, max_length=20)


class ScheduleSpec(SpecSettings):
    """A schedule as a client sends it: a pipeline, its parameters, and when it runs."""

    name: Slug = Field(examples=["btc-price"])
    pipeline: str = Field(examples=["api_call"])
    paused: bool = False

    @field_validator("pipeline")
    @classmethod
    def _known_pipeline(cls, value: str) -> str:
        if value not in PIPELINE_NAMES:
            raise ValueError(f"unknown pipeline {value!r}; known: {', '.join(PIPELINE_NAMES)}")
        return value


class SchedulePatch(_Strict):
    """A partial change: only the fields given are replaced."""

    description: str | None = Field(default=None, max_length=2000)
    timing: Timing | None = None
    parameters: dict[str, Any] | None = None
    retries: int | None = Field(default=None, ge=0, le=10)
    retry_delay_seconds: int | None = Field(default=None, ge=0, le=86_400)
    concurrency_limit: int | None = Field(default=None, ge=1, le=1000)
    collision: Literal["enqueue", "cancel_new"] | None = None
    tags: list[str] | None = Field(default=None, max_length=20)

    def apply_to(self, spec: ScheduleSpec) -> dict[str, Any]:
        """The spec's fields with this patch's given fields replacing them (not yet validated)."""
        merged = spec.model_dump(mode="json")
        merged.update(self.model_dump(mode="json", exclude_unset=True))
        return merged
