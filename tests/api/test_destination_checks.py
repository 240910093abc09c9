"""A destination in another database is checked when the schedule is created."""

from __future__ import annotations

from typing import Any


def test_a_destination_block_table_is_checked_when_the_schedule_is_created(api, warehouse):
    spec: dict[str, Any] = {
        "name": "to-warehouse",
        "pipeline": "api_call",
        "timing": {"type": "manual"},
        "parameters": {
            "source": {"base_url": "https://example.com"},
            "extract": {"root": "data[]", "fields": {"symbol": "symbol", "eur": "quote.eur"}},
            "destination": {"block": "warehouse", "table": "prices", "key_columns": ["symbol"]},
        },
    }
    refused = api.post("/api/schedules", json=spec)
    assert refused.status_code == 422
    assert refused.json()["detail"][0]["loc"] == ["body", "parameters", "extract", "fields"]
    assert "eur" in refused.json()["detail"][0]["msg"]

    spec["parameters"]["extract"]["fields"] = {"symbol": "symbol", "usd": "quote.usd"}
    spec["parameters"]["destination"]["key_columns"] = ["usd"]
    refused = api.post("/api/schedules", json=spec)
    assert refused.json()["detail"][0]["loc"][-1] == "key_columns"

    spec["parameters"]["destination"]["key_columns"] = ["symbol"]
    assert api.post("/api/schedules", json=spec).status_code == 201
    missing_block = {**spec, "name": "no-block"}
    missing_block["parameters"] = {
        **spec["parameters"],
        "destination": {"block": "nope", "table": "prices"},
    }
    assert api.post("/api/schedules", json=missing_block).json()["detail"][0]["loc"][-1] == "block"
