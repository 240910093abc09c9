"""The decisions the warm worker takes before it starts a run (deployments/controls.py), and
the retry backoff the flows apply (flows/run_controls.py): plain functions, no server."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from deployments.controls import (
    IGNORE_WINDOWS_TAG,
    MANUAL_TAG,
    ClaimedRun,
    Decision,
    RunControls,
    decide,
    in_window,
    jitter_offset,
    next_opening,
)
from deployments.spec import Window, Windows
from flows.run_controls import retry_delay

PARIS = ZoneInfo("Europe/Paris")
# A Monday, 08:00 in Paris (CET, UTC+1).
MONDAY_8 = datetime(2027, 1, 4, 8, 0, tzinfo=PARIS)
OFFICE = Window.model_validate(
    {
        "days": ["mon", "tue", "wed", "thu", "fri"],
        "from": "09:00",
        "to": "17:00",
        "timezone": "Europe/Paris",
    }
)
NIGHT = Window.model_validate({"days": ["fri"], "from": "22:00", "to": "02:00", "timezone": "UTC"})


def controls(**fields: object) -> RunControls:
    return RunControls.model_validate(fields)


def decision(
    ctrl: RunControls, scheduled: datetime, now: datetime, tags: tuple[str, ...] = (), **kw: Any
) -> Decision:
    run = ClaimedRun(
        id=kw.pop("run_id", uuid.UUID(int=7)),
        expected=kw.pop("expected", scheduled),
        scheduled=scheduled,
        tags=tags,
        created=kw.pop("created", None),
    )
    return decide(ctrl, run, now, **kw)


def test_windows_include_their_start_and_exclude_their_end() -> None:
    assert not in_window(MONDAY_8, OFFICE)
    assert in_window(MONDAY_8.replace(hour=9), OFFICE)
    assert in_window(MONDAY_8.replace(hour=16, minute=59), OFFICE)
    assert not in_window(MONDAY_8.replace(hour=17), OFFICE)
    assert not in_window(MONDAY_8 - timedelta(days=1, hours=-2), OFFICE)  # Sunday 10:00


def test_an_overnight_window_ends_the_next_day() -> None:
    friday_23 = datetime(2027, 1, 8, 23, 0, tzinfo=UTC)
    assert in_window(friday_23, NIGHT)
    assert in_window(friday_23 + timedelta(hours=2, minutes=59), NIGHT)  # Saturday 01:59
    assert not in_window(friday_23 + timedelta(hours=3), NIGHT)
    assert not in_window(friday_23 - timedelta(days=1), NIGHT)  # Thursday 23:00


def test_the_next_opening_is_the_first_start_after_now() -> None:
    assert next_opening(MONDAY_8, [OFFICE]) == MONDAY_8.replace(hour=9)
    friday_evening = datetime(2027, 1, 8, 18, 0, tzinfo=PARIS)
    assert next_opening(friday_evening, [OFFICE]) == datetime(2027, 1, 11, 9, 0, tzinfo=PARIS)
    assert next_opening(friday_evening, [OFFICE, NIGHT]) == datetime(2027, 1, 8, 22, 0, tzinfo=UTC)
    inside = MONDAY_8.replace(hour=10)
    assert next_opening(inside, [OFFICE]) == inside


def test_a_window_follows_its_zone_across_dst() -> None:
    # 09:00 Paris is 08:00 UTC in winter and 07:00 UTC in summer.
    assert next_opening(datetime(2027, 3, 26, 20, 0, tzinfo=UTC), [OFFICE]) == datetime(
        2027, 3, 29, 7, 0, tzinfo=UTC
    )


def test_outside_the_windows_a_run_is_deferred_or_skipped() -> None:
    defer = controls(windows=Windows(allowed=[OFFICE]))
    deferred = decision(defer, MONDAY_8, MONDAY_8)
    assert (deferred.action, deferred.at) == ("defer", MONDAY_8.replace(hour=9))
    assert "Outside its execution windows (mon,tue,wed,thu,fri 09:00-17:00 Europe/Paris)" in (
        deferred.reason
    )
    skip = controls(windows=Windows(allowed=[OFFICE], outside="skip"))
    skipped = decision(skip, MONDAY_8, MONDAY_8)
    assert (skipped.action, skipped.name) == ("cancel", "OutsideWindow")
    assert decision(skip, MONDAY_8, MONDAY_8, (MANUAL_TAG, IGNORE_WINDOWS_TAG)).action == "run"
    assert decision(skip, MONDAY_8, MONDAY_8, (MANUAL_TAG,)).action == "cancel"
    assert decision(skip, MONDAY_8.replace(hour=10), MONDAY_8).action == "run"


def test_jitter_is_stable_per_run_and_spread_over_the_range() -> None:
    ids = [uuid.uuid4() for _ in range(200)]
    offsets = [jitter_offset(i, 60).total_seconds() for i in ids]
    assert all(0 <= o <= 60 for o in offsets)
    assert max(offsets) - min(offsets) > 50  # spread, not bunched
    assert [jitter_offset(i, 60).total_seconds() for i in ids] == offsets
    ctrl = controls(jitter_seconds=60)
    run_id = next(i for i in ids if jitter_offset(i, 60).total_seconds() > 1)
    first = decision(ctrl, MONDAY_8, MONDAY_8, run_id=run_id)
    target = MONDAY_8 + jitter_offset(run_id, 60)
    assert (first.action, first.at) == ("defer", target)
    # Picked up again at that time, it runs (the offset is from its schedule's time).
    moved = decision(ctrl, target, target, run_id=run_id, expected=MONDAY_8)
    assert moved.action == "run"
    assert decision(ctrl, MONDAY_8, MONDAY_8, (MANUAL_TAG,), run_id=run_id).action == "run"


@pytest.mark.parametrize(
    ("policy", "late_by", "newer_due", "action"),
    [
        ("all", 3600, True, "run"),
        ("none", 30, False, "run"),
        ("none", 90, False, "cancel"),
        ("latest", 90, True, "cancel"),
        ("latest", 90, False, "run"),
        ("latest", 30, True, "run"),
    ],
)
def test_catch_up_decides_what_a_late_run_does(
    policy: str, late_by: int, newer_due: bool, action: str
) -> None:
    ctrl = controls(catchup={"policy": policy, "window_seconds": 60})
    now = MONDAY_8 + timedelta(seconds=late_by)
    made = MONDAY_8 - timedelta(minutes=10)  # by the scheduler, ahead of its time
    assert decision(ctrl, MONDAY_8, now, created=made, newer_due=newer_due).action == action
    # A run started by hand, or made after its time (a backfill), is never caught up.
    assert decision(ctrl, MONDAY_8, now, (MANUAL_TAG,), newer_due=newer_due).action == "run"
    backfilled = MONDAY_8 + timedelta(days=1)
    assert decision(ctrl, MONDAY_8, now, created=backfilled, newer_due=newer_due).action == "run"


def test_a_missed_run_says_why() -> None:
    ctrl = controls(catchup={"policy": "none", "window_seconds": 60})
    missed = decision(ctrl, MONDAY_8, MONDAY_8 + timedelta(minutes=5))
    assert missed.name == "Missed"
    assert "picked up 300 s late" in missed.reason and "catch-up: none" in missed.reason


def test_retry_backoff() -> None:
    assert [retry_delay(10, n, "fixed") for n in (1, 2, 3)] == [10, 10, 10]
    assert [retry_delay(10, n, "exponential") for n in (1, 2, 3, 4)] == [10, 20, 40, 80]
    assert [retry_delay(10, n, "exponential", 30) for n in (1, 2, 3)] == [10, 20, 30]
