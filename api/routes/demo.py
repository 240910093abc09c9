"""A tiny price feed so the example api_call deployment works without internet."""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import APIRouter

router = APIRouter(prefix="/demo", tags=["demo"])

COINS = {"BTC": ("Bitcoin", 64_000.0), "ETH": ("Ethereum", 3_100.0), "SOL": ("Solana", 140.0)}


@router.get("/prices")
def prices() -> dict[str, Any]:
    """Spot prices that drift with time, shaped like a typical market-data API."""
    now = time.time()
    return {
        "as_of": int(now),
        "data": [
            {
                "symbol": symbol,
                "name": name,
                "quote": {"usd": round(base * (1 + 0.02 * math.sin(now / 600 + i)), 2)},
            }
            for i, (symbol, (name, base)) in enumerate(COINS.items())
        ],
    }
