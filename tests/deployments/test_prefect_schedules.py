"""Every timing type becomes the Prefect schedule that fires at the right local wall-clock times."""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule
from pydantic import TypeAdapter

from deployments.prefect_schedules import (
    from_prefect_schedule,
    next_fire_times,
    to_prefect_schedule,
)
from deployments.spec import Timing

timing = TypeAdapter(Timing).validate_python
PARIS = ZoneInfo("Europe/Paris")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            {"type": "cron", "cron": "0 */6 * * *", "timezone": "Europe/Paris"},
            CronSchedule(cron="0 */6 * * *", timezone="Europe/Paris"),
        ),
        (
            {"type": "daily", "at": "07:05", "timezone": "Asia/Tokyo"},
            CronSchedule(cron="5 7 * * *", timezone="Asia/Tokyo"),
        ),
        (
            {
                "type": "weekly",
                "days": ["thu", "Mon"],
                "at": "07:30",
                "timezone": "America/New_York",
            },
            CronSchedule(cron="30 7 * * mon,thu", timezone="America/New_York"),
        ),
        (
            {
                "type": "rrule",
                "rrule": "FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0",
                "timezone": "UTC",
            },
            RRuleSchedule(rrule="FREQ=WEEKLY;BYDAY=MO;BYHOUR=9;BYMINUTE=0", timezone="UTC"),
        ),
    ],
)
def test_timing_maps_to_the_prefect_schedule(spec, expected):
    assert to_prefect_schedule(timing(spec)) == expected


def test_interval_has_a_stable_anchor_in_its_zone():
    schedule = to_prefect_schedule(
        timing({"type": "interval", "every_minutes": 15, "timezone": "Europe/Paris"})
    )
    assert isinstance(schedule, IntervalSchedule)
    assert schedule.interval == timedelta(minutes=15)
    assert schedule.anchor_date == datetime(2020, 1, 1, tzinfo=PARIS)


def test_manual_has_no_schedule_and_once_a_single_occurrence():
    assert to_prefect_schedule(timing({"type": "manual"})) is None
    once = to_prefect_schedule(
        timing({"type": "once", "at": "2031-03-30T10:30:00", "timezone": "Europe/Paris"})
    )
    assert isinstance(once, RRuleSchedule)
    assert list(once.to_rrule()) == [datetime(2031, 3, 30, 10, 30, tzinfo=PARIS)]


@pytest.mark.parametrize(
    "spec",
    [
        {"type": "cron", "cron": "15 4 * * 1-5", "timezone": "Europe/Paris"},
        {"type": "daily", "at": "09:00", "timezone": "Europe/Paris"},
        {"type": "weekly", "days": ["sun"], "at": "23:45", "timezone": "Australia/Sydney"},
        {
            "type": "interval",
            "every_seconds": 90.0,
            "timezone": "UTC",
            "anchor": "2024-01-01T00:00:00Z",
        },
        {"type": "rrule", "rrule": "FREQ=DAILY;BYHOUR=6", "timezone": "UTC"},
        {"type": "manual"},
    ],
)
def test_prefect_schedule_reads_back_as_the_same_timing(spec):
    parsed = timing(spec)
    assert from_prefect_schedule(parsed.type, to_prefect_schedule(parsed)) == parsed


def test_a_cron_edited_in_the_ui_reads_back_as_cron():
    edited = CronSchedule(cron="*/5 * * * *", timezone="UTC")
    assert from_prefect_schedule("daily", edited) == timing({"type": "cron", "cron": "*/5 * * * *"})


def test_once_reads_back_as_its_instant():
    at = datetime.now(UTC).replace(microsecond=0) + timedelta(days=3)
    parsed = timing({"type": "once", "at": at.isoformat(), "timezone": "Europe/Paris"})
    back = from_prefect_schedule("once", to_prefect_schedule(parsed))
    assert back.type == "once" and back.when == at


def fire(schedule, count: int = 3) -> list[datetime]:
    return asyncio.run(next_fire_times(schedule, count))


@pytest.mark.parametrize(
    ("spec", "same_wall_time"),
    [
        # Paris at 09:30 on Mondays: the UTC hour moves with DST, the local time does not.
        ({"type": "weekly", "days": ["mon"], "at": "09:30", "timezone": "Europe/Paris"}, True),
        ({"type": "cron", "cron": "15 4 * * *", "timezone": "America/New_York"}, True),
        ({"type": "interval", "every_minutes": 90, "timezone": "UTC"}, False),
        ({"type": "rrule", "rrule": "FREQ=DAILY;BYHOUR=6;BYMINUTE=0", "timezone": "UTC"}, True),
    ],
)
def test_next_fire_times_are_what_prefect_plans(spec, same_wall_time):
    from prefect.server.schemas.schedules import SCHEDULE_TYPES

    from deployments.prefect_patches import install_client_fixes

    install_client_fixes()  # as our API and Prefect's server run: cron by Debian's rules

    schedule = to_prefect_schedule(timing(spec))
    assert schedule is not None
    before = datetime.now(UTC)
    times = fire(schedule)
    assert len(times) == 3 and times == sorted(set(times)) and times[0] >= before
    assert all(t.utcoffset() == timedelta(0) for t in times)
    # The dates Prefect's scheduler computes from the schedule as its server stores it.
    stored = TypeAdapter(SCHEDULE_TYPES).validate_python(schedule.model_dump())
    planned = asyncio.run(stored.get_dates(n=3, start=before))
    assert times == [d.astimezone(UTC) for d in planned]
    if same_wall_time:
        zone = ZoneInfo(spec["timezone"])
        assert len({t.astimezone(zone).time() for t in times}) == 1


def test_no_schedule_or_a_passed_once_fires_never():
    assert fire(None) == []
    once = to_prefect_schedule(timing({"type": "once", "at": "2031-03-30T10:30:00Z"}))
    assert fire(once) == [datetime(2031, 3, 30, 10, 30, tzinfo=UTC)]
    passed = RRuleSchedule(rrule="DTSTART:20200101T000000\nRRULE:FREQ=DAILY;COUNT=1")
    assert fire(passed) == []


def test_next_fire_times_are_kept_until_the_first_passes(monkeypatch):
    from deployments import prefect_schedules

    monkeypatch.setattr(prefect_schedules, "_NEXT_TIMES", OrderedDict())  # none kept yet
    schedule = CronSchedule(cron="0 9 * * 1", timezone="Europe/Paris")
    first = fire(schedule)
    calls = 0
    real = prefect_schedules.debian_cron_times

    def counting(*args, **kwargs):
        nonlocal calls
        calls += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(prefect_schedules, "debian_cron_times", counting)
    assert fire(schedule) == first and calls == 0  # kept
    first.append(first[0])  # callers get their own list
    assert fire(schedule) == first[:3] and calls == 0
    # Once the first kept time has passed, the times are computed again.
    key = next(k for k in prefect_schedules._NEXT_TIMES if k[1] == schedule.model_dump_json())
    prefect_schedules._NEXT_TIMES[key] = [datetime(2020, 1, 6, 8, tzinfo=UTC)]
    assert fire(schedule) == first[:3] and calls == 1
    # Another count, time zone or cron is another schedule.
    fire(schedule, 2)
    fire(CronSchedule(cron="0 9 * * 1", timezone="UTC"))
    assert calls == 3
