"""Pure statistics over run timings, one definition for the API and the benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by nearest rank: the smallest value with at least q% of
    the values at or below it, so it is always one of the values; None when there are none.

    Our API's p95 duration and every benchmark's p95 use this, so the numbers mean the same.
    """
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} is not between 0 and 100")
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]
