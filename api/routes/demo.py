"""A tiny price feed, crew API and news feed so the example pipelines work without internet."""

from __future__ import annotations

import math
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any
from xml.sax.saxutils import escape

from fastapi import APIRouter, Response
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


STORIES = (
    "Open-weight models close the gap on reasoning benchmarks",
    "A practical guide to evaluating retrieval pipelines",
    "Why small models win at the edge",
    "Scheduling data pipelines without a cron box",
    "What changed in vector databases this year",
)


@router.get("/feed.xml")
def news_feed() -> Response:
    """An RSS 2.0 feed of a few recent stories (the newsletter example's source)."""
    now = datetime.now(UTC)
    items = "".join(
        f"<item><title>{escape(title)}</title>"
        f"<link>https://news.example.com/stories/{i}</link>"
        f"<description>{escape(f'A short summary of: {title.lower()}.')}</description>"
        f"<pubDate>{format_datetime(now - timedelta(hours=2 * i + 1))}</pubDate></item>"
        for i, title in enumerate(STORIES)
    )
    body = (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        "<title>Demo AI news</title><link>https://news.example.com</link>"
        f"<description>Stories for the newsletter example</description>{items}</channel></rss>"
    )
    return Response(body, media_type="application/rss+xml")
