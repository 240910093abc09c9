"""What a schedule does, in words, for its deployment's description in the Prefect UI.

A schedule created without a description gets one from its pipeline, its parameters and its
timing (`GET https://api.example.com/prices → api_records, every 5 minutes`). Our API still
answers the description the user gave (""): a stored description equal to the generated one
for the deployment as it is reads back as "", so a later change of timing or source writes a
new one instead of keeping a stale text. Pure functions of the stored parameters (JSON).
"""

from __future__ import annotations

import re
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


def slug_words(text: str) -> str:
    """`America/New_York` -> `america-new-york`: what Prefect's UI accepts in a slug."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")


_CRON_DAYS = ("sun", "mon", "tue", "wed", "thu", "fri", "sat", "sun")


def _field_words(field: str, *, days: bool = False) -> str:
    """One cron field: `*` -> `x`, `*/2` -> `every-2`, week days by name (`1-5` -> `mon-fri`)."""
    if field == "*":
        return "x"
    text = field.replace("*/", "every-")
    if days:
        text = re.sub(r"(?<![/\d])[0-7](?!\d)", lambda m: _CRON_DAYS[int(m[0])], text)
    return slug_words(text) or "x"


def cron_words(cron: str) -> str:
    """A cron expression in a slug's words: the common shapes by name, any other field by field
    (`*` as `x`): `every-5-minutes`, `daily-0930`, `mon-fri-0900`, `0-9-1-x-x`."""
    fields = cron.split()
    if len(fields) != 5:
        return slug_words(cron)
    minute, hour, dom, month, dow = fields
    rest = (dom, month, dow)
    if rest == ("*", "*", "*") and hour == "*":
        if minute == "*":
            return "every-minute"
        if step := re.fullmatch(r"\*/(\d+)", minute):
            return f"every-{step[1]}-minutes"
        if minute.isdigit():
            return f"hourly-at-{int(minute):02d}"
    if minute.isdigit() and hour.isdigit():
        at = f"{int(hour):02d}{int(minute):02d}"
        if rest == ("*", "*", "*"):
            return f"daily-{at}"
        if (dom, month) == ("*", "*"):
            return f"{_field_words(dow, days=True)}-{at}"
        if (month, dow) == ("*", "*") and dom.isdigit():
            return f"monthly-day-{int(dom)}-{at}"
    words = [_field_words(field) for field in fields[:4]]
    return "-".join([*words, _field_words(dow, days=True)])


def schedule_slug(timing: Timing) -> str:
    """The label of a deployment's schedule in the Prefect UI: the timing's kind, what it does
    and its time zone (`weekly-mon-thu-0730-america-new-york`). It starts with the kind and a
    `-`: `prefect_schedules.timing_kind` reads the kind back from it."""
    match timing:
        case CronTiming(cron=cron):
            words = cron_words(cron)
        case IntervalTiming():
            words = slug_words(period_words(timing.period))
        case DailyTiming(at=at):
            words = at.replace(":", "")
        case WeeklyTiming(days=days, at=at):
            words = f"{'-'.join(days)}-{at.replace(':', '')}"
        case RRuleTiming(rrule=rule):
            freq = re.search(r"FREQ=(\w+)", rule)
            words = slug_words(freq[1]) if freq else "rule"
        case OnceTiming(at=at):
            words = f"{at:%Y-%m-%d-%H%M}"
        case _:
            return f"{timing.type}-on-demand"
    return f"{timing.type}-{words}-{slug_words(timing.timezone)}"


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
    if pipeline == "newsletter":
        actions = " → ".join(parameters.get("actions") or ["scrape", "generate", "send"])
        return f"newsletter of workspace {parameters.get('workspace_id', '?')}: {actions}"
    return pipeline


def default_description(pipeline: str, parameters: dict[str, Any], timing: Timing) -> str:
    """The description a schedule without one gets."""
    return f"{work_words(pipeline, parameters)}, {timing_words(timing)}"


def given_description(stored: str | None, generated: str) -> str:
    """The description the user gave: "" when what is stored is the generated one."""
    return "" if not stored or stored == generated else stored
