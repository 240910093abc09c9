"""The ranges our query and path numbers and dates must fall in, in one place.

Past them, the databases and Prefect fail rather than answer (an offset past a 64-bit integer,
a date whose UTC time is past year 9999): refused with a 422 naming the parameter instead.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import Path, Query

# No page starts two billion items in; every database and Prefect take it as an offset.
MAX_OFFSET = 2**31 - 1
# Our tables' ids are 64-bit integers.
MAX_ID = 2**63 - 1

Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]
RowId = Annotated[int, Path(ge=1, le=MAX_ID)]


def within_utc_range(value: datetime) -> datetime:
    """A datetime whose UTC time exists (9999-12-31T23:59:59-23:59 does not)."""
    if value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            raise ValueError("is out of range once converted to UTC") from None
    return value
