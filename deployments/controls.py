"""The controls our warm worker applies before it starts a run: windows, catch-up and jitter.

Prefect has none of them (they are among its most-asked scheduling issues), so this is our
code, applied at the one moment that decides whether a run starts: when a worker has claimed
it (deployments/warm_worker.py, Prefect's worker plugin point). What to do is decided here,
as plain functions of the run's times and the schedule's controls:

- **catch-up**: a run picked up more than `window_seconds` after its time (no worker ran
  when it was due) is cancelled with the reason under `none`, and under `latest` when a newer
  run of the schedule is due already (only the most recent missed run executes); `all` is
  Prefect's own behaviour. Runs started by hand, and runs made after their time (a backfill:
  they were never missed), are never caught up.
- **jitter**: a planned run starts at a stable offset in [0, N] s after its time (a hash of
  its id), so runs due at the same moment spread out.
- **dependencies**: a run made because a schedule it depends on failed ends Cancelled as
  DEPENDENCY_FAILED (deployments/dependencies.py makes those runs).
- **windows**: a run due outside every allowed window waits for the next opening (`defer`)
  or ends Cancelled with the reason (`skip`); a run-now tagged `ignore-windows` bypasses them.

Prefect's stock process worker (WORKER_TYPE=process) does not apply them.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Literal
from zoneinfo import ZoneInfo

from pydantic import BaseModel, Field

from deployments.spec import WEEKDAYS, Catchup, GlobalLimit, RateLimit, Window, Windows

MANUAL_TAG = "trigger:manual"
# A run created this long after its time was made for a time already past (a backfill);
# Prefect's scheduler makes runs ahead of their time.
BACKFILLED = timedelta(seconds=60)
IGNORE_WINDOWS_TAG = "ignore-windows"
# A schedule whose runs skip when one is running (Temporal's overlap policy SKIP): Prefect's
# cancel_new collision, each run it cancels recorded as Skipped by our worker.
SKIP_TAG = "collision:skip"
# How close to its target a run's scheduled time must be to count as "moved there already".
TOLERANCE = timedelta(seconds=0.5)
# Cancelled runs' state names, as history shows them.
MISSED, SUPERSEDED, OUTSIDE = "Missed", "Superseded", "OutsideWindow"
# A run made because a schedule it depends on failed (deployments/dependencies.py).
DEPENDENCY_FAILED = "DEPENDENCY_FAILED"


class RunControls(BaseModel):
    """The `controls` job variable a deployment's spec wrote (deployments/job_template.py)."""

    windows: Windows | None = None
    catchup: Catchup = Field(default_factory=Catchup)
    jitter_seconds: int = 0
    limits: list[GlobalLimit] = Field(default_factory=list)
    rate_limit: RateLimit | None = None
    # Set on the run (not the deployment) by a dependency's failure automation: its name.
    dependency_failed: str | None = None

    @property
    def decides(self) -> bool:
        """True when a run's start depends on its times (windows, catch-up, jitter) or on a
        dependency."""
        return bool(
            self.windows
            or self.jitter_seconds
            or self.catchup.policy != "all"
            or self.dependency_failed
        )


@dataclass(frozen=True)
class Decision:
    """Start now (`run`), move to `at` (`defer`), or end Cancelled as `name` (`cancel`)."""

    action: Literal["run", "defer", "cancel"]
    reason: str = ""
    at: datetime | None = None
    name: str = "Cancelled"


RUN = Decision("run")


def jitter_offset(run_id: uuid.UUID, seconds: int) -> timedelta:
    """A run's offset in [0, seconds]: the same every time it is asked for that run."""
    fraction = int.from_bytes(hashlib.sha256(run_id.bytes).digest()[:8], "big") / 2**64
    return timedelta(seconds=round(seconds * fraction, 3))


def _opening(window: Window, day: date) -> tuple[datetime, datetime]:
    """The window's start and end on `day` (its end the next day when `to` <= `from`)."""
    zone = ZoneInfo(window.timezone)
    start, end = time.fromisoformat(window.start), time.fromisoformat(window.end)
    opens = datetime.combine(day, start, zone)
    closes = datetime.combine(day + timedelta(days=end <= start), end, zone)
    return opens, closes


def in_window(when: datetime, window: Window) -> bool:
    """True when `when` falls in one of the window's openings."""
    local = when.astimezone(ZoneInfo(window.timezone)).date()
    for day in (local - timedelta(days=1), local):
        if WEEKDAYS[day.weekday()] in window.days:
            opens, closes = _opening(window, day)
            if opens <= when < closes:
                return True
    return False


def next_opening(when: datetime, windows: list[Window]) -> datetime | None:
    """The first instant at or after `when` inside one of `windows` (None: never)."""
    if any(in_window(when, w) for w in windows):
        return when
    starts = []
    for window in windows:
        local = when.astimezone(ZoneInfo(window.timezone)).date()
        for offset in range(8):
            day = local + timedelta(days=offset)
            if WEEKDAYS[day.weekday()] in window.days:
                opens, _ = _opening(window, day)
                if opens >= when:
                    starts.append(opens)
                    break
    return min(starts, default=None)


@dataclass(frozen=True)
class ClaimedRun:
    """What the decisions read of a run a worker claimed: `expected`, the time its schedule
    gave it; `scheduled`, the time it is due now (moved by a deferral); `created`, when it
    was made."""

    id: uuid.UUID
    expected: datetime
    scheduled: datetime
    tags: tuple[str, ...] = ()
    created: datetime | None = None

    @property
    def made_after_its_time(self) -> bool:
        """A run created after its time (a backfilled one) was never missed."""
        return self.created is not None and self.created > self.expected + BACKFILLED


def is_late(controls: RunControls, run: ClaimedRun, now: datetime) -> bool:
    """True when the catch-up policy has a say: a planned run, which existed when it was
    due, picked up past its window."""
    if controls.catchup.policy == "all" or MANUAL_TAG in run.tags or run.made_after_its_time:
        return False
    return (now - run.scheduled).total_seconds() > controls.catchup.window_seconds


def decide(
    controls: RunControls, run: ClaimedRun, now: datetime, newer_due: bool = False
) -> Decision:
    """What to do with a claimed run now. `newer_due`: a newer run of its schedule is due
    already."""
    scheduled, expected, tags = run.scheduled, run.expected, run.tags
    if controls.dependency_failed:
        reason = (
            f"{DEPENDENCY_FAILED}: a run of {controls.dependency_failed!r}, which this schedule "
            "depends on, did not complete"
        )
        return Decision("cancel", reason, name=DEPENDENCY_FAILED)
    if is_late(controls, run, now):
        seconds = (now - scheduled).total_seconds()
        late = f"due at {scheduled.isoformat()}, picked up {seconds:.0f} s late"
        allowed = f"more than the catch-up window of {controls.catchup.window_seconds} s"
        if controls.catchup.policy == "none":
            return Decision("cancel", f"Missed: {late}, {allowed} (catch-up: none)", name=MISSED)
        if newer_due:
            reason = f"Superseded: {late}, and a newer run is due (catch-up: latest)"
            return Decision("cancel", reason, name=SUPERSEDED)
    planned = MANUAL_TAG not in tags
    if planned and controls.jitter_seconds:
        target = expected + jitter_offset(run.id, controls.jitter_seconds)
        if scheduled < target - TOLERANCE:
            offset = (target - expected).total_seconds()
            return Decision("defer", f"Jitter: starts {offset:.1f} s after its time", at=target)
    if controls.windows and IGNORE_WINDOWS_TAG not in tags:
        start = max(now, scheduled)
        opening = next_opening(start, controls.windows.allowed)
        if opening == start:
            return RUN
        described = describe_windows(controls.windows)
        if controls.windows.outside == "skip" or opening is None:
            reason = f"Outside its execution windows ({described}): skipped"
            return Decision("cancel", reason, name=OUTSIDE)
        reason = f"Outside its execution windows ({described}): deferred to the next opening"
        return Decision("defer", reason, at=opening)
    return RUN


def describe_windows(windows: Windows) -> str:
    """The windows in a few words, for a run's state message."""
    return "; ".join(
        f"{','.join(w.days) if len(w.days) < 7 else 'every day'} {w.start}-{w.end} {w.timezone}"
        for w in windows.allowed
    )
