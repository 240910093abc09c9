"""When a cron expression fires across DST changes: Debian cron's rules, by cronsim.

Pure schedule maths, used by our API (next fire times) and, through
deployments/prefect_patches.py, by Prefect's server when it plans runs, so the scheduler,
the UI and our answers agree.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import islice, takewhile
from zoneinfo import ZoneInfo

from cronsim import CronSim, CronSimError

# More than any DST change moves a clock (one hour; Lord Howe's is 30 minutes).
_SHIFT = timedelta(hours=2)
_SECOND = timedelta(seconds=1)


def debian_cron_times(
    cron: str,
    timezone: str | None,
    start: datetime,
    *,
    limit: int,
    end: datetime | None = None,
    day_or: bool = True,
) -> list[datetime] | None:
    """The times `cron` fires in `timezone` from `start` on (inclusive; at most `limit`, none
    after `end`), aware in the zone, by Debian cron's rules across DST changes:

    - a fixed time that falls in a spring-forward gap runs once, at the first instant after
      the gap (`30 2 * * *` in Europe/Paris on 2027-03-28: 03:00 CEST);
    - a fixed time in a repeated fall-back hour runs once, at its first occurrence;
    - when the minute or hour field is a wildcard or a step (`0 * * * *`, `*/15 * * * *`),
      the schedule runs at every real instant whose wall-clock time matches: in every real
      hour, both copies of a repeated hour included, never in a gap.

    Prefect 3.8's own cron maths (croniter) plans the first an hour early and skips the third.
    None when these rules do not apply to the expression: croniter extensions cronsim does not
    read (`@daily`, `H`, six fields with seconds) or `day_or=False` (fcron's AND of the day
    fields); the caller then uses Prefect's maths.
    """
    fields = cron.split()
    if not day_or or len(fields) != 5:
        return None
    zone = ZoneInfo(timezone or "UTC")
    # A plain datetime: subclasses (Prefect's pendulum DateTime) do their own DST arithmetic.
    utc = start.astimezone(UTC)
    begin = datetime(*utc.timetuple()[:6], utc.microsecond, tzinfo=UTC)
    if begin.microsecond:  # "on or after start": a fraction of a second rounds up
        begin = begin.replace(microsecond=0) + _SECOND
    wildcard = fields[0].startswith("*") or fields[1].startswith("*")
    try:
        if wildcard:
            times = _every_real_instant(cron, zone, begin)
        else:
            # cronsim's own Debian handling of fixed times (its iterator answers times strictly
            # after the one it is given).
            times = iter(CronSim(cron, (begin - _SECOND).astimezone(zone)))
        if end is not None:
            times = takewhile(lambda t: t <= end, times)
        return list(islice(times, limit))
    except CronSimError:
        return None


def _every_real_instant(cron: str, zone: ZoneInfo, begin: datetime) -> Iterator[datetime]:
    """Every instant from `begin` whose wall-clock time in `zone` matches `cron`, in order.

    cronsim lists the matching wall-clock times (naive, so no DST of its own: its aware
    iteration misses some half-hour-shift cases, e.g. Lord Howe's 02:30 on the morning its
    clocks go forward); zoneinfo says which instants have each time: none in a gap, two in a
    repeated hour. The second copy of a repeated time comes after later times' first copies,
    so instants wait in a heap until no later wall-clock time can come before them.
    """
    local = begin.astimezone(zone).replace(tzinfo=None)
    walls = CronSim(cron, local - _SHIFT - _SECOND)
    pending: list[datetime] = []
    for wall in walls:
        for fold in (0, 1):
            instant = wall.replace(tzinfo=zone, fold=fold).astimezone(UTC)
            real = instant.astimezone(zone).replace(tzinfo=None) == wall
            if real and instant >= begin and instant not in pending:
                heapq.heappush(pending, instant)
        safe = wall.replace(tzinfo=zone).astimezone(UTC) - _SHIFT
        while pending and pending[0] <= safe:
            yield heapq.heappop(pending).astimezone(zone)
    while pending:  # cronsim's horizon (50 years) reached
        yield heapq.heappop(pending).astimezone(zone)
