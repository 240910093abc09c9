"""What a schedule does, in words, for its deployment's description in the Prefect UI.

A schedule created without a description gets one from its pipeline, its parameters and its
timing (`GET https://api.example.com/prices → api_records, every 5 minutes`). Our API still
answers the description the user gave (""): a stored description equal to the generated one
for the deployment as it is reads back as "", so a later change of timing or source writes a
new one instead of keeping a stale text. Pure functions of the stored parameters (JSON).
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from deployments.spec import (
    CronTiming,
    DailyTiming,
    IntervalTiming,
    ManualTiming,
    OnceTiming,
    RRuleTiming,
    Timing,
    WeeklyTiming,
)

UNITS = ((86400, "day"), (3600, "hour"), (60, "minute"), (1, "second"))


def period_words(period: timedelta) -> str:
    """`every 5 minutes`, `every hour`, `every 90 seconds`: the largest whole unit."""
    seconds = period.total_seconds()
    for size, unit in UNITS:
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"every {unit}" if n == 1 else f"every {n} {unit}s"
    return f"every {seconds:g} seconds"


def timing_words(timing: Timing) -> str:
    """When a schedule runs, with its time zone."""
    match timing:
        case CronTiming(cron=cron, timezone=tz):
            return f"cron `{cron}` ({tz})"
        case IntervalTiming():
            return f"{period_words(timing.period)} ({timing.timezone})"
        case DailyTiming(at=at, timezone=tz):
            return f"daily at {at} ({tz})"
        case WeeklyTiming(days=days, at=at, timezone=tz):
            return f"{', '.join(days)} at {at} ({tz})"
        case RRuleTiming(rrule=rule, timezone=tz):
            return f"rrule `{rule}` ({tz})"
        case OnceTiming(at=at, timezone=tz):
            return f"once at {at:%Y-%m-%d %H:%M} ({tz})"
        case ManualTiming():
            return "on demand"
    return timing.type


def work_words(pipeline: str, parameters: dict[str, Any]) -> str:
    """What one run of the pipeline does with these parameters."""
    if pipeline == "api_call":
        source, request = parameters.get("source") or {}, parameters.get("request") or {}
        destination = parameters.get("destination") or {}
        url = f"{str(source.get('base_url', '')).rstrip('/')}{request.get('path', '/')}"
        return f"{request.get('method', 'GET')} {url} → {destination.get('table', 'api_records')}"
    if pipeline == "crew":
        return "users with a context or goal → the crew API → crew_responses"
    if pipeline == "service_job":
        return f"POST {parameters.get('service', '?')}{parameters.get('endpoint', '')}"
    return pipeline


def default_description(pipeline: str, parameters: dict[str, Any], timing: Timing) -> str:
    """The description a schedule without one gets."""
    return f"{work_words(pipeline, parameters)}, {timing_words(timing)}"


def given_description(stored: str | None, generated: str) -> str:
    """The description the user gave: "" when what is stored is the generated one."""
    return "" if not stored or stored == generated else stored
