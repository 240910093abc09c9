"""Prefect's server plans cron, daily and weekly schedules by Debian cron's DST rules: the runs
`POST /deployments/{id}/schedule` creates over a transition are the reference's, once each."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from tests.utils.cron_reference import expected_times, transitions
from tests.utils.factories import api_call_spec
from tests.utils.prefect_server import plan_runs, planned_runs


def change(zone: str, index: int) -> datetime:
    """The zone's first (0) or second (1) UTC-offset change of 2027."""
    return transitions(zone, 2027)[index]


CASES: list[tuple[str, dict[str, Any], str, int]] = [
    # (name, timing, cron it stands for, which change)
    ("paris-gap", {"type": "cron", "cron": "30 2 * * *"}, "30 2 * * *", 0),
    ("berlin-hourly", {"type": "cron", "cron": "0 * * * *"}, "0 * * * *", 1),
    ("ny-daily-gap", {"type": "daily", "at": "02:30"}, "30 2 * * *", 0),
    ("ny-weekly-repeat", {"type": "weekly", "days": ["sun"], "at": "01:30"}, "30 1 * * sun", 1),
    ("lord-howe-half-hourly", {"type": "cron", "cron": "*/30 * * * *"}, "*/30 * * * *", 0),
    ("lord-howe-spring", {"type": "cron", "cron": "15 2 * * *"}, "15 2 * * *", 1),
    ("havana-midnight", {"type": "daily", "at": "00:00"}, "0 0 * * *", 0),
    ("santiago-midnight", {"type": "daily", "at": "00:30"}, "30 0 * * *", 1),
    ("sydney-fall", {"type": "cron", "cron": "30 2 * * *"}, "30 2 * * *", 0),
]
ZONE = {
    "paris": "Europe/Paris",
    "berlin": "Europe/Berlin",
    "ny": "America/New_York",
    "lord": "Australia/Lord_Howe",
    "havana": "America/Havana",
    "santiago": "America/Santiago",
    "sydney": "Australia/Sydney",
}


@pytest.mark.parametrize(("name", "timing", "cron", "which"), CASES, ids=[c[0] for c in CASES])
def test_prefect_plans_the_runs_debian_cron_would(api, prefect_api_url, name, timing, cron, which):
    zone = ZONE[name.split("-")[0]]
    at = change(zone, which)
    # Wide enough for a day on each side, narrow enough for Prefect to plan every run (<= 100).
    start, end = at - timedelta(hours=22), at + timedelta(hours=22)
    spec = api_call_spec(f"dst-{name}", "https://example.com", timing={**timing, "timezone": zone})
    created = api.post("/api/schedules", json=spec)
    assert created.status_code == 201, created.text
    deployment_id = created.json()["deployment_id"]
    for _ in range(2):  # planning the window again adds nothing
        plan_runs(prefect_api_url, deployment_id, start, end)
    runs = [r for r in planned_runs(prefect_api_url, deployment_id) if start <= r <= end]
    assert [r.astimezone(UTC) for r in runs] == expected_times(cron, zone, start, end)
