"""Checks shared by block fields and pipeline parameters: URLs, SQL identifiers, block names.

Plain functions over strings that import nothing of ours, so blocks/ and flows/ (and the
schedule spec) can all use them without importing each other.
"""

from __future__ import annotations

import re

import httpx

IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
BLOCK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


def check_http_url(value: str) -> str:
    """An absolute http(s) URL with a host."""
    try:
        url = httpx.URL(value)
    except httpx.InvalidURL as exc:
        raise ValueError(f"not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an absolute http:// or https:// URL")
    return value


def check_identifier(value: str) -> str:
    """A plain SQL identifier (what a table or column name may be)."""
    if not IDENTIFIER.match(value):
        raise ValueError(f"{value!r} is not a SQL identifier (letters, digits, _; max 63)")
    return value


def check_block_name(value: str) -> str:
    """A Prefect block document name as we create them."""
    if not BLOCK_NAME.match(value):
        raise ValueError(f"{value!r} is not a block name (lowercase letters, digits, -)")
    return value
