"""The schedule spec: one validated model per schedule, checked before anything reaches Prefect."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Annotated, Any, Literal, get_args
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

from blocks.validators import check_http_url

SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
HHMM = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
# The pipelines a schedule can run (deployments/pipelines.py says what each is, and checks
# that it defines exactly these): named here so the spec validates without importing them.
PIPELINE_NAMES = ("api_call", "crew", "service_job", "newsletter")
Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAY_NAMES: tuple[Weekday, ...] = get_args(Weekday)


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


def short_days(value: Any) -> Any:
    """Day names as the spec's three lowercase letters ("Monday", "MON" -> "mon")."""
    if not isinstance(value, list):
        return value
    return [d.lower()[:3] if isinstance(d, str) else d for d in value]


class WeeklyTiming(_Strict):
    type: Literal["weekly"] = "weekly"
    days: list[Weekday] = Field(min_length=1, examples=[["mon", "thu"]])
    at: TimeOfDay
    timezone: TimeZone = "UTC"

    _days = field_validator("days", mode="before")(short_days)


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


# -- scheduling controls (deployments/controls.py applies them) ------------------------------

Priority = Literal["critical", "high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
# enqueue and cancel_new are Prefect's deployment collision strategies; skip is Prefect's
# cancel_new recorded as "Skipped" (Temporal's overlap policy SKIP).
Collision = Literal["enqueue", "cancel_new", "skip"]
Backoff = Literal["fixed", "exponential"]
MAX_DELAY = 7 * 86_400


class Window(_Strict):
    """A time of the week runs may start in: `days` (all when none) from `from` to `to`
    (exclusive; a `to` at or before `from` ends the next day) in `timezone`."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAY_NAMES))
    start: TimeOfDay = Field(alias="from")
    end: TimeOfDay = Field(alias="to")
    timezone: TimeZone = "UTC"

    model_config = ConfigDict(extra="forbid", populate_by_name=True, serialize_by_alias=True)

    _days = field_validator("days", mode="before")(short_days)


class Windows(_Strict):
    """When runs may start; a run due outside every window waits for the next opening
    (`defer`) or ends Cancelled with the reason (`skip`)."""

    allowed: list[Window] = Field(min_length=1, max_length=50)
    outside: Literal["defer", "skip"] = "defer"


class Catchup(_Strict):
    """What happens to runs missed by more than `window_seconds` (no worker ran when they were
    due): `all` run (Prefect's own way), `latest` only the newest missed run of the schedule,
    `none` no missed run (each ends Cancelled with the reason)."""

    policy: Literal["all", "latest", "none"] = "all"
    window_seconds: int = Field(default=60, ge=0, le=MAX_DELAY)


AlertOn = Literal["failed", "late", "stuck", "recovered"]
BLOCK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,99}$")


class Alerts(_Strict):
    """Prefect automations that call a webhook when a run of the schedule fails, is late, is
    stuck (running past `timeout_seconds`, or 3x its median duration) or completes after a
    failure (recovered). `webhook` is kept in a Prefect Webhook block (its URL secret), which
    the schedule then names as `block`; `block` names a Webhook block of yours."""

    on: list[AlertOn] = Field(default_factory=lambda: list[AlertOn](["failed"]), min_length=1)
    webhook: str | None = Field(default=None, examples=["https://hooks.slack.com/services/..."])
    block: str | None = Field(default=None, description="A Prefect Webhook block's name")

    @field_validator("webhook")
    @classmethod
    def _http(cls, value: str | None) -> str | None:
        return check_http_url(value) if value is not None else None

    @field_validator("block")
    @classmethod
    def _block_name(cls, value: str | None) -> str | None:
        if value is not None and not BLOCK_NAME.match(value):
            raise ValueError(f"{value!r} is not a Prefect block name (a-z, 0-9, -)")
        return value

    @field_validator("on")
    @classmethod
    def _each_once(cls, value: list[AlertOn]) -> list[AlertOn]:
        return sorted(set(value), key=value.index)

    @model_validator(mode="after")
    def _one_target(self) -> Alerts:
        if (self.webhook is None) == (self.block is None):
            raise ValueError("give exactly one of webhook (a URL) and block (a Webhook block)")
        return self


LIMIT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$")


def check_limit_name(value: str) -> str:
    if not LIMIT_NAME.match(value):
        raise ValueError(f"{value!r} is not a limit name (letters, digits, _ . : -, max 100)")
    return value


LimitName = Annotated[str, AfterValidator(check_limit_name)]


class GlobalLimit(_Strict):
    """A Prefect global concurrency limit a run holds a slot of while it runs; created with
    `size` slots (DEFAULT_LIMIT_SIZE when none) if it does not exist yet."""

    name: LimitName
    size: int | None = Field(default=None, ge=1, le=10_000)


class RateLimit(_Strict):
    """At most `per_second` runs start per second (a Prefect limit whose slots decay)."""

    name: LimitName
    per_second: float = Field(gt=0, le=10_000)


def named_limits(value: Any) -> Any:
    """Limits given by name alone ("warehouse") as objects ({"name": "warehouse"})."""
    if not isinstance(value, list):
        return value
    return [{"name": v} if isinstance(v, str) else v for v in value]


def distinct(values: list[str]) -> list[str]:
    repeated = sorted({v for v in values if values.count(v) > 1})
    if repeated:
        raise ValueError(f"names {repeated} more than once")
    return values


DependsOn = Annotated[list[Slug], Field(max_length=20), AfterValidator(distinct)]


class SpecSettings(_Strict):
    """What a schedule may change after creation: everything but its name and pipeline."""

    description: str = Field(default="", max_length=2000)
    timing: Timing = Field(default_factory=ManualTiming)
    parameters: dict[str, Any] = Field(default_factory=dict)
    retries: int = Field(default=0, ge=0, le=10, description="Flow-level retries of a failed run")
    retry_delay_seconds: int = Field(default=30, ge=0, le=86_400)
    retry_backoff: Backoff = Field(
        default="fixed", description="exponential: each retry waits twice the one before"
    )
    retry_max_delay_seconds: int | None = Field(default=None, ge=0, le=MAX_DELAY)
    timeout_seconds: int | None = Field(
        default=None, ge=1, le=MAX_DELAY, description="A run still running past it fails"
    )
    priority: Priority = "normal"
    concurrency_limit: int | None = Field(default=None, ge=1, le=1000)
    collision: Collision = "enqueue"
    windows: Windows | None = None
    catchup: Catchup = Field(default_factory=Catchup)
    jitter_seconds: int = Field(
        default=0, ge=0, le=3600, description="Each run starts at a stable offset in [0, N] s"
    )
    limits: list[GlobalLimit] = Field(default_factory=list, max_length=10)
    rate_limit: RateLimit | None = None
    alerts: Alerts | None = None
    depends_on: DependsOn = Field(
        default_factory=list,
        description="Schedules this one runs after: after each completion of the one named, "
        "or once all of several named have completed",
    )
    tags: list[str] = Field(default_factory=list, max_length=20)

    _limits = field_validator("limits", mode="before")(named_limits)

    @model_validator(mode="before")
    @classmethod
    def _retry_object(cls, value: Any) -> Any:
        return unpack_retry(value)


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


# The `retry` object a client may send, and the spec fields each of its keys sets.
RETRY_KEYS = {
    "attempts": "retries",
    "delay_seconds": "retry_delay_seconds",
    "backoff": "retry_backoff",
    "max_delay_seconds": "retry_max_delay_seconds",
}


def unpack_retry(value: Any) -> Any:
    """`{"retry": {"attempts", "delay_seconds", "backoff", "max_delay_seconds"}}` as the spec's
    flat retry fields (the form the issue's clients send; both at once is refused)."""
    if not isinstance(value, dict) or "retry" not in value:
        return value
    value = dict(value)
    retry = value.pop("retry")
    if retry is None:
        return value
    if not isinstance(retry, dict):
        raise ValueError("retry must be an object: attempts, delay_seconds, backoff, ...")
    unknown = set(retry) - set(RETRY_KEYS)
    if unknown:
        raise ValueError(f"retry has unknown keys {sorted(unknown)}; known: {list(RETRY_KEYS)}")
    for key, field in RETRY_KEYS.items():
        if key in retry:
            if field in value:
                raise ValueError(f"give {field} or retry.{key}, not both")
            value[field] = retry[key]
    return value


class SchedulePatch(_Strict):
    """A partial change: only the fields given are replaced."""

    description: str | None = Field(default=None, max_length=2000)
    timing: Timing | None = None
    parameters: dict[str, Any] | None = None
    retries: int | None = Field(default=None, ge=0, le=10)
    retry_delay_seconds: int | None = Field(default=None, ge=0, le=86_400)
    retry_backoff: Backoff | None = None
    retry_max_delay_seconds: int | None = Field(default=None, ge=0, le=MAX_DELAY)
    timeout_seconds: int | None = Field(default=None, ge=1, le=MAX_DELAY)
    priority: Priority | None = None
    concurrency_limit: int | None = Field(default=None, ge=1, le=1000)
    collision: Collision | None = None
    windows: Windows | None = None
    catchup: Catchup | None = None
    jitter_seconds: int | None = Field(default=None, ge=0, le=3600)
    limits: list[GlobalLimit] | None = Field(default=None, max_length=10)
    rate_limit: RateLimit | None = None
    alerts: Alerts | None = None
    depends_on: DependsOn | None = None
    tags: list[str] | None = Field(default=None, max_length=20)

    _limits = field_validator("limits", mode="before")(named_limits)

    @model_validator(mode="before")
    @classmethod
    def _retry_object(cls, value: Any) -> Any:
        return unpack_retry(value)

    def apply_to(self, spec: ScheduleSpec) -> dict[str, Any]:
        """The spec's fields with this patch's given fields replacing them (not yet validated)."""
        merged = spec.model_dump(mode="json")
        merged.update(self.model_dump(mode="json", exclude_unset=True))
        return merged
