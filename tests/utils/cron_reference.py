"""An independent reading of Debian cron's DST rules, minute by minute, to check cronsim against.

Written from the rules, not from cronsim's code, with nothing but zoneinfo:
- an expression whose minute or hour field starts with `*` fires at every real instant whose
  local wall-clock time matches (so in both copies of a repeated hour, never in a gap);
- any other fires once per matching wall-clock time, at the first instant whose local time is
  at or past it: its first occurrence in a repeated hour, the end of a gap it falls in.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

NAMES = {
    "sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
    "jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
    "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
}  # fmt: skip
RANGES = [(0, 59), (0, 23), (1, 31), (1, 12), (0, 7)]
MINUTE = timedelta(minutes=1)


def _value(text: str) -> int:
    return NAMES[text.lower()] if text.lower() in NAMES else int(text)


def field_values(text: str, low: int, high: int) -> set[int]:
    """The values a cron field allows: `*`, `a`, `a-b`, any of them `/step`, comma lists."""
    values: set[int] = set()
    for part in text.split(","):
        span, _, step = part.partition("/")
        if span == "*":
            first, last = low, high
        elif "-" in span:
            first, last = (_value(v) for v in span.split("-"))
        else:
            first = last = _value(span)
            if step:
                last = high
        values.update(range(first, last + 1, int(step or 1)))
    return values


class Cron:
    """A five-field expression's allowed values, and whether its days are ANDed or ORed."""

    def __init__(self, expression: str):
        self.fields = expression.split()
        minute, hour, dom, month, dow = (
            field_values(text, *bounds) for text, bounds in zip(self.fields, RANGES, strict=True)
        )
        self.minutes, self.hours, self.doms, self.months = minute, hour, dom, month
        self.dows = {d % 7 for d in dow}
        self.days_and = self.fields[2].startswith("*") or self.fields[4].startswith("*")
        self.wildcard = self.fields[0].startswith("*") or self.fields[1].startswith("*")

    def day_matches(self, day: date) -> bool:
        if day.month not in self.months:
            return False
        dom, dow = day.day in self.doms, (day.weekday() + 1) % 7 in self.dows
        return dom and dow if self.days_and else dom or dow

    def time_matches(self, wall: datetime) -> bool:
        return wall.minute in self.minutes and wall.hour in self.hours and self.day_matches(wall)


def _utc_minutes(start: datetime, end: datetime) -> Iterator[datetime]:
    moment = start.astimezone(UTC).replace(second=0, microsecond=0)
    if moment < start:
        moment += MINUTE
    while moment <= end:
        yield moment
        moment += MINUTE


def first_instant_at_or_past(wall: datetime, zone: ZoneInfo) -> datetime:
    """The first instant whose local wall-clock time in `zone` is `wall` or later."""
    moment = wall.replace(tzinfo=UTC) - timedelta(hours=15)  # before any zone's `wall`
    while moment.astimezone(zone).replace(tzinfo=None) < wall:
        moment += MINUTE
    return moment


def expected_times(
    expression: str, timezone: str, start: datetime, end: datetime
) -> list[datetime]:
    """The instants (UTC) in [start, end] at which Debian cron runs `expression` in `timezone`."""
    cron, zone = Cron(expression), ZoneInfo(timezone)
    if cron.wildcard:
        return [
            moment
            for moment in _utc_minutes(start, end)
            if cron.time_matches(moment.astimezone(zone).replace(tzinfo=None))
        ]
    found: set[datetime] = set()
    day = (start - timedelta(days=1)).astimezone(zone).date()
    while day <= (end + timedelta(days=1)).astimezone(zone).date():
        if cron.day_matches(day):
            for hour in sorted(cron.hours):
                for minute in sorted(cron.minutes):
                    wall = datetime(day.year, day.month, day.day, hour, minute)
                    moment = first_instant_at_or_past(wall, zone)
                    if start <= moment <= end:
                        found.add(moment)
        day += timedelta(days=1)
    return sorted(found)


def transitions(timezone: str, year: int) -> list[datetime]:
    """The instants (UTC, to the minute) at which `timezone` changes its UTC offset in `year`."""
    zone, found = ZoneInfo(timezone), []
    moment = datetime(year, 1, 1, tzinfo=UTC)
    step = timedelta(hours=1)
    while moment.year == year:
        if moment.astimezone(zone).utcoffset() != (moment + step).astimezone(zone).utcoffset():
            low = moment  # the change is within this hour: find its minute
            while low.astimezone(zone).utcoffset() == moment.astimezone(zone).utcoffset():
                low += MINUTE
            found.append(low)
        moment += step
    return found
