"""Cron across DST by Debian cron's rules: cronsim's times match an independent minute-by-minute
reading of the rules in zones of both hemispheres, with 30-minute and midnight transitions."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from deployments.cron import debian_cron_times
from deployments.prefect_schedules import daily_cron, weekly_cron
from tests.utils.cron_reference import expected_times, transitions

# Both hemispheres; Lord Howe shifts by 30 minutes; Santiago, Havana, Beirut and Cairo change
# at midnight; Asuncion (no DST since 2024) is a zone without transitions.
ZONES = [
    "Europe/Paris",
    "America/New_York",
    "Australia/Sydney",
    "America/Santiago",
    "Australia/Lord_Howe",
    "America/Havana",
    "Asia/Beirut",
    "Africa/Cairo",
]
EXPRESSIONS = [
    "30 2 * * *",  # fixed, in Europe's and America's gaps
    "0 2 * * *",
    "45 1 * * *",
    "0 0 * * *",  # fixed, in the midnight zones' gaps
    "30 0 * * *",
    "15 23 * * *",  # fixed, in the midnight zones' repeated hour
    "0,30 1-3 * * *",
    "0 9 * * *",  # far from every change
    "0 * * * *",  # wildcard hour: every real hour
    "30 * * * *",
    "*/15 * * * *",  # step minute
    "5 */2 * * *",  # step hour
    "30 2 * * 0",  # weekly on Sundays, when most changes happen
    "0 0 1-7 * 0",  # day of month OR day of week
    daily_cron("01:30"),
    weekly_cron(["sun", "sat"], "02:15"),
]


def cases() -> list[tuple[str, datetime]]:
    return [(zone, moment) for zone in ZONES for moment in transitions(zone, 2027)]


@pytest.mark.parametrize(("zone", "change"), cases(), ids=lambda v: str(v)[:16])
def test_times_around_a_dst_change_follow_debian_crons_rules(zone: str, change: datetime) -> None:
    start, end = change - timedelta(hours=30), change + timedelta(hours=30)
    for expression in EXPRESSIONS:
        got = debian_cron_times(expression, zone, start, end=end, limit=1000)
        assert got is not None
        assert [t.astimezone(UTC) for t in got] == expected_times(expression, zone, start, end), (
            expression
        )


def test_every_zone_of_the_list_changes_twice_in_2027() -> None:
    assert {zone: len(transitions(zone, 2027)) for zone in ZONES} == dict.fromkeys(ZONES, 2)


PARIS, BERLIN = ZoneInfo("Europe/Paris"), ZoneInfo("Europe/Berlin")


def local(times: list[datetime] | None, zone: ZoneInfo) -> list[str]:
    assert times is not None
    return [t.astimezone(zone).strftime("%d %H:%M%z") for t in times]


def test_a_fixed_time_in_the_spring_gap_runs_once_at_its_end() -> None:
    got = debian_cron_times(
        "30 2 * * *", "Europe/Paris", datetime(2027, 3, 27, tzinfo=UTC), limit=3
    )
    assert local(got, PARIS) == ["27 02:30+0100", "28 03:00+0200", "29 02:30+0200"]


def test_a_fixed_time_in_the_repeated_hour_runs_once_at_its_first_occurrence() -> None:
    start = datetime(2027, 10, 30, tzinfo=UTC)
    assert local(debian_cron_times("30 2 * * *", "Europe/Berlin", start, limit=2), BERLIN) == [
        "30 02:30+0200",
        "31 02:30+0200",
    ]


def test_an_hourly_schedule_runs_in_both_copies_of_the_repeated_hour() -> None:
    start = datetime(2027, 10, 30, 22, tzinfo=UTC)
    assert local(debian_cron_times("0 * * * *", "Europe/Berlin", start, limit=5), BERLIN) == [
        "31 00:00+0200",
        "31 01:00+0200",
        "31 02:00+0200",
        "31 02:00+0100",
        "31 03:00+0100",
    ]


def test_start_is_inclusive_and_fractions_of_a_second_round_up() -> None:
    at = datetime(2027, 1, 1, 9, 0, tzinfo=UTC)
    assert debian_cron_times("0 9 * * *", "UTC", at, limit=1) == [at]
    later = debian_cron_times("0 9 * * *", "UTC", at + timedelta(microseconds=1), limit=1)
    assert later == [at + timedelta(days=1)]


def test_end_bounds_the_answer() -> None:
    start = datetime(2027, 1, 1, tzinfo=UTC)
    got = debian_cron_times("0 9 * * *", "UTC", start, end=start + timedelta(days=2), limit=100)
    assert got is not None and len(got) == 2


@pytest.mark.parametrize(
    ("expression", "day_or"),
    [("@daily", True), ("0 0 9 * * *", True), ("H 9 * * *", True), ("0 9 1 * mon", False)],
)
def test_what_the_rules_do_not_cover_is_left_to_prefect(expression: str, day_or: bool) -> None:
    start = datetime(2027, 1, 1, tzinfo=UTC)
    assert debian_cron_times(expression, "UTC", start, limit=1, day_or=day_or) is None


def test_prefect_alone_plans_both_dst_cases_wrong() -> None:
    """What the fix is for, in a fresh interpreter without it: if this fails, Prefect may have
    fixed its cron maths upstream, and deployments/prefect_patches.py's fix can go."""
    probe = (
        "import asyncio, json\n"
        "from datetime import datetime, UTC\n"
        "from prefect.server.schemas.schedules import CronSchedule\n"
        "async def dates(cron, zone, start, n):\n"
        "    found = await CronSchedule(cron=cron, timezone=zone).get_dates(n=n, start=start)\n"
        "    return [str(d) for d in found]\n"
        "print(json.dumps([\n"
        "    asyncio.run(dates('30 2 * * *', 'Europe/Paris',\n"
        "                      datetime(2027, 3, 27, 12, tzinfo=UTC), 1)),\n"
        "    asyncio.run(dates('0 * * * *', 'Europe/Berlin',\n"
        "                      datetime(2027, 10, 30, 23, tzinfo=UTC), 3)),\n"
        "]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120
    ).stdout
    paris, berlin = json.loads(out.splitlines()[-1])
    assert paris == ["2027-03-28 01:30:00+01:00"]  # an hour before 02:30, which does not exist
    assert "2027-10-31 02:00:00+01:00" not in berlin  # the repeated hour has no run
