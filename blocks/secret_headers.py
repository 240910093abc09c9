"""Credential headers of an HTTP source, kept in a Prefect Secret block (never in parameters)."""

from __future__ import annotations

import json
from typing import Any, cast

from prefect.blocks.system import Secret

from blocks.base import load_block


async def load_secret_headers(name: str | None) -> dict[str, str]:
    """The headers the Secret block `name` holds as a JSON object ({} without a name)."""
    if not name:
        return {}
    secret = cast(Secret[Any], await load_block(Secret, name))
    value = secret.get()
    if isinstance(value, str):
        value = json.loads(value)
    if not isinstance(value, dict):
        raise ValueError(f"Secret block {name!r} must hold a JSON object of headers")
    return {str(k): str(v) for k, v in value.items()}
