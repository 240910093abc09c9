"""Pure schedule maths: a spec's timing as Prefect schedules, and Prefect's schedules back."""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule
from prefect.server.schemas import schedules as server_schedules
from pydantic import TypeAdapter

from deployments.cron import debian_cron_times
from deployments.spec import (
    WEEKDAYS,
    CronTiming,
    DailyTiming,
    IntervalTiming,
    ManualTiming,
    OnceTiming,
    RRuleTiming,
    Timing,
    WeeklyTiming,
)

PrefectSchedule = CronSchedule | IntervalSchedule | RRuleSchedule

_DAILY_CRON = re.compile(r"^(\d{1,2}) (\d{1,2}) \* \* \*$")
_WEEKLY_CRON = re.compile(r"^(\d{1,2}) (\d{1,2}) \* \* ([a-z,]+)$")


def daily_cron(at: str) -> str:
    hour, minute = (int(part) for part in at.split(":"))
    return f"{minute} {hour} * * *"


def weekly_cron(days: Sequence[str], at: str) -> str:
    ordered = [d for d in WEEKDAYS if d in set(days)]
    return daily_cron(at)[:-1] + ",".join(ordered)


def once_rrule(timing: OnceTiming) -> str:
    """A rule with a single occurrence at the wall-clock time of `at` in the timing's zone."""
    local = timing.when.astimezone(ZoneInfo(timing.timezone)).replace(tzinfo=None)
    return f"DTSTART:{local:%Y%m%dT%H%M%S}\nRRULE:FREQ=DAILY;COUNT=1"


def to_prefect_schedule(timing: Timing) -> PrefectSchedule | None:
    """The Prefect schedule that fires at the spec's times (None: run on demand only).

    Daily, weekly and once become cron / rrule schedules in the given zone, so the UI shows
    the real schedule; cron times follow Debian cron across DST (`debian_cron_times`).
    """
    match timing:
        case CronTiming():
            return CronSchedule(cron=timing.cron, timezone=timing.timezone)
        case DailyTiming():
            return CronSchedule(cron=daily_cron(timing.at), timezone=timing.timezone)
        case WeeklyTiming():
            return CronSchedule(cron=weekly_cron(timing.days, timing.at), timezone=timing.timezone)
        case IntervalTiming():
            # A fixed default anchor keeps runs on round clock times and stable across updates.
            anchor = timing.anchor or datetime(2020, 1, 1, tzinfo=ZoneInfo(timing.timezone))
            return IntervalSchedule(
                interval=timing.period, anchor_date=anchor, timezone=timing.timezone
            )
        case RRuleTiming():
            return RRuleSchedule(rrule=timing.rrule, timezone=timing.timezone)
        case OnceTiming():
            return RRuleSchedule(rrule=once_rrule(timing), timezone=timing.timezone)
        case ManualTiming():
            return None
    raise TypeError(f"unknown timing {timing!r}")


def timing_kind(slug: str | None) -> str | None:
    """The spec timing type a schedule's slug names: its first word (`weekly-mon-0730-utc` ->
    `weekly`, see `descriptions.schedule_slug`; a bare `weekly` from earlier versions too)."""
    return slug.split("-", 1)[0] if slug else None


def from_prefect_schedule(slug: str | None, schedule: PrefectSchedule | None) -> Timing:
    """The spec timing a deployment's schedule stands for; its `slug` names the timing kind.

    Reads Prefect's schedule rather than a copy of ours, so a change an operator makes in the
    UI shows in our answers; a schedule we cannot read as `kind` is reported as what it is.
    """
    tz = (schedule.timezone if schedule is not None else None) or "UTC"
    kind = timing_kind(slug)
    match schedule:
        case None:
            return ManualTiming()
        case CronSchedule(cron=cron):
            if kind == "daily" and (m := _DAILY_CRON.match(cron)):
                return DailyTiming(at=f"{int(m[2]):02d}:{int(m[1]):02d}", timezone=tz)
            if kind == "weekly" and (m := _WEEKLY_CRON.match(cron)):
                days = [d for d in m[3].split(",") if d in WEEKDAYS]
                return WeeklyTiming(days=days, at=f"{int(m[2]):02d}:{int(m[1]):02d}", timezone=tz)
            return CronTiming(cron=cron, timezone=tz)
        case IntervalSchedule(interval=interval, anchor_date=anchor):
            return IntervalTiming(
                every_seconds=interval.total_seconds(), anchor=anchor, timezone=tz
            )
        case RRuleSchedule(rrule=rule):
            if kind == "once" and "COUNT=1" in rule:
                start = schedule.to_rrule()
                first = next(iter(start), None)
                if first is not None:
                    return OnceTiming.model_construct(at=first.astimezone(UTC), timezone=tz)
            return RRuleTiming(rrule=rule, timezone=tz)
    return ManualTiming()


async def next_fire_times(schedule: PrefectSchedule | None, count: int) -> list[datetime]:
    """The next `count` times from now that Prefect's scheduler plans for `schedule`.

    The same maths as the scheduler (cron: `debian_cron_times`, which our fix gives Prefect's
    server; others: Prefect's server-side schedule models), so the answer is the runs the
    scheduler will create, whether or not its loop has created them yet. That maths
    costs ~0.3 ms a schedule (a page of 50 jobs doubled Prefect's own time for the page), so
    answers are kept per schedule and count until the first of them passes: until then the
    next `count` times from now are the same times.
    """
    if schedule is None:
        return []
    key = (type(schedule).__name__, schedule.model_dump_json(), count)
    now = datetime.now(UTC)
    known = _NEXT_TIMES.get(key)
    if known is not None and (not known or known[0] > now):
        _NEXT_TIMES.move_to_end(key)
        return list(known)
    times = await fire_times(schedule, now, count)
    _NEXT_TIMES[key] = times
    if len(_NEXT_TIMES) > _NEXT_TIMES_KEPT:
        _NEXT_TIMES.popitem(last=False)
    return list(times)


async def schedule_interval(schedule: PrefectSchedule | None) -> timedelta | None:
    """The time between the schedule's next two runs (None: it plans fewer than two, as a
    manual or once schedule)."""
    times = await next_fire_times(schedule, 2)
    return times[1] - times[0] if len(times) == 2 else None


async def fire_times(
    schedule: PrefectSchedule, start: datetime, count: int, end: datetime | None = None
) -> list[datetime]:
    """The times (UTC) `schedule` fires from `start` (inclusive) on, at most `count`, none
    after `end`: the scheduler's own maths, as `next_fire_times` says."""
    planned = (
        debian_cron_times(
            schedule.cron, schedule.timezone, start, limit=count, end=end, day_or=schedule.day_or
        )
        if isinstance(schedule, CronSchedule)
        else None
    )
    if planned is None:
        server = _AS_SERVER_SCHEDULE.validate_python(schedule.model_dump())
        until = {"end": end} if end is not None else {}
        planned = list(await server.get_dates(n=count, start=start, **until))
    return [d.astimezone(UTC) for d in planned]


# The schedule as Prefect's server stores it (the model whose maths its scheduler runs).
_AS_SERVER_SCHEDULE: TypeAdapter[server_schedules.SCHEDULE_TYPES] = TypeAdapter(
    server_schedules.SCHEDULE_TYPES
)
# Next fire times by (schedule type, schedule JSON, count), least recently used first.
_NEXT_TIMES: OrderedDict[tuple[str, str, int], list[datetime]] = OrderedDict()
_NEXT_TIMES_KEPT = 10_000
