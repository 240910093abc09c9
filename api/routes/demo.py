"""A tiny price feed and crew API so the example pipelines work without internet."""

from __future__ import annotations

import math
import time
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel, Field

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


class CrewRequest(BaseModel):
    customer_business_background_latest: str | None = Field(default=None, max_length=20_000)
    customer_goal_latest: str | None = Field(default=None, max_length=20_000)


@router.post("/run-crew")
def run_crew(request: CrewRequest) -> dict[str, Any]:
    """A stand-in for the crew scheduler's crew API: a canned plan for the user's goal."""
    goal = request.customer_goal_latest or "a clearer goal"
    return {
        "status": "completed",
        "result": {
            "summary": f"Plan towards {goal}",
            "steps": ["Review the business background", f"Set three milestones for {goal}"],
        },
    }
