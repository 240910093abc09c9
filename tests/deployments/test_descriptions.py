"""A schedule without a description gets one that says what it does and when."""

from __future__ import annotations

from datetime import timedelta

import pytest

from deployments.descriptions import (
    default_description,
    given_description,
    period_words,
    timing_words,
)
from deployments.spec import ScheduleSpec


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
