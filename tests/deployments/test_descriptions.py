"""A schedule without a description gets one that says what it does and when."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from deployments.descriptions import (
    default_description,
    given_description,
    period_words,
    schedule_slug,
    timing_words,
)
from deployments.prefect_schedules import timing_kind
from deployments.spec import ScheduleSpec

# The pattern Prefect's UI checks a schedule's slug against when the schedule is edited there.
PREFECT_UI_SLUG = r"[a-z0-9]+([_-]+[a-z0-9]+)*"


@pytest.mark.parametrize(
    ("period", "words"),
    [
        (timedelta(minutes=5), "every 5 minutes"),
        (timedelta(hours=1), "every hour"),
        (timedelta(seconds=90), "every 90 seconds"),
        (timedelta(days=2), "every 2 days"),
        (timedelta(seconds=1.5), "every 1.5 seconds"),
    ],
)
def test_periods_read_in_their_largest_whole_unit(period, words):
    assert period_words(period) == words


@pytest.mark.parametrize(
    ("timing", "words"),
    [
        ({"type": "cron", "cron": "*/5 * * * *"}, "cron `*/5 * * * *` (UTC)"),
        (
            {"type": "daily", "at": "09:30", "timezone": "Europe/Paris"},
            "daily at 09:30 (Europe/Paris)",
        ),
        ({"type": "weekly", "days": ["mon", "thu"], "at": "08:00"}, "mon, thu at 08:00 (UTC)"),
        ({"type": "interval", "every_minutes": 15}, "every 15 minutes (UTC)"),
        ({"type": "manual"}, "on demand"),
    ],
)
def test_timings_read_with_their_time_zone(timing, words):
    spec = ScheduleSpec.model_validate(
        {"name": "x", "pipeline": "crew", "timing": timing, "parameters": {}}
    )
    assert timing_words(spec.timing) == words


def test_an_api_call_says_its_request_and_table_and_a_given_text_is_kept():
    spec = ScheduleSpec.model_validate(
        {"name": "x", "pipeline": "crew", "timing": {"type": "cron", "cron": "0 9 * * *"}}
    )
    parameters = {"source": {"base_url": "https://api.example.com/"}, "request": {"path": "/v1"}}
    generated = default_description("api_call", parameters, spec.timing)
    assert generated == "GET https://api.example.com/v1 → api_records, cron `0 9 * * *` (UTC)"
    assert given_description(generated, generated) == ""
    assert given_description("BTC in USD", generated) == "BTC in USD"
    assert given_description(None, generated) == ""


@pytest.mark.parametrize(
    ("timing", "slug"),
    [
        ({"type": "cron", "cron": "*/5 * * * *"}, "cron-every-5-minutes-utc"),
        (
            {"type": "cron", "cron": "0 9 * * 1-5", "timezone": "Europe/Paris"},
            "cron-mon-fri-0900-europe-paris",
        ),
        ({"type": "cron", "cron": "30 2 1 * *"}, "cron-monthly-day-1-0230-utc"),
        ({"type": "cron", "cron": "15 * * * *"}, "cron-hourly-at-15-utc"),
        ({"type": "cron", "cron": "*/10 8-17 * * 1-5"}, "cron-every-10-8-17-x-x-mon-fri-utc"),
        (
            {
                "type": "weekly",
                "days": ["mon", "thu"],
                "at": "07:30",
                "timezone": "America/New_York",
            },
            "weekly-mon-thu-0730-america-new-york",
        ),
        ({"type": "daily", "at": "09:30", "timezone": "Etc/GMT+5"}, "daily-0930-etc-gmt-5"),
        ({"type": "interval", "every_minutes": 15}, "interval-every-15-minutes-utc"),
        ({"type": "rrule", "rrule": "FREQ=WEEKLY;BYDAY=MO"}, "rrule-weekly-utc"),
        (
            {"type": "once", "at": "2099-01-01T09:00:00", "timezone": "Asia/Tokyo"},
            "once-2099-01-01-0900-asia-tokyo",
        ),
    ],
)
def test_schedule_labels_say_kind_timing_and_zone_as_prefect_slugs(timing, slug):
    spec = ScheduleSpec.model_validate(
        {"name": "x", "pipeline": "crew", "timing": timing, "parameters": {}}
    )
    label = schedule_slug(spec.timing)
    assert label == slug
    assert re.fullmatch(PREFECT_UI_SLUG, label)  # the UI's schedule form accepts it as is
    assert timing_kind(label) == spec.timing.type
