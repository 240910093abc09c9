"""Request bodies the tests send to our API."""

from __future__ import annotations

from typing import Any


def api_call_spec(
    name: str, base_url: str, path: str = "/prices", **overrides: Any
) -> dict[str, Any]:
    """An api_call schedule for a source on 127.0.0.1, with quick retries."""
    spec: dict[str, Any] = {
        "name": name,
        "pipeline": "api_call",
        "timing": {"type": "manual"},
        "parameters": {
            "source": {"base_url": base_url},
            "request": {"path": path, "retries": 3, "backoff_seconds": 0.2, "timeout_seconds": 5},
            "extract": {
                "root": "data[]",
                "fields": {"symbol": "symbol", "usd": "quote.usd"},
                "key": "symbol",
            },
        },
    }
    spec.update(overrides)
    return spec
