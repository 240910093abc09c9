"""What a run's log says it did, in the pipeline's words: pure functions, one line each.

Each task logs one INFO line built here (the request and its answer, the items extracted, the
rows stored, the users called, the job's result), so an operator reading a run in Prefect's UI
sees the work, not only Prefect's state changes. Nothing secret reaches a line: a URL loses its
user info and its query values (an API key travels there as often as in a header), and headers
are never shown.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qsl, quote, urlsplit, urlunsplit

import httpx
from prefect import get_run_logger
from prefect.exceptions import MissingContextError

HIDDEN = "…"


def run_logger() -> logging.Logger | logging.LoggerAdapter[logging.Logger]:
    """The run's logger (its lines reach Prefect's UI); outside a run, as when a test calls a
    task's function directly, this module's logger."""
    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger(__name__)


def shown_url(url: httpx.URL | str) -> str:
    """`url` without user info and with every query value hidden (names are kept)."""
    parts = urlsplit(str(url))
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc = f"{netloc}:{parts.port}"
    names = [name for name, _ in parse_qsl(parts.query, keep_blank_values=True)]
    query = "&".join(f"{quote(name)}={HIDDEN}" for name in names)
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def exchange_line(response: httpx.Response, seconds: float) -> str:
    """`GET https://host/path?key=… → 200 OK, 4,312 bytes in 0.21 s`."""
    request = response.request
    reason = f" {response.reason_phrase}" if response.reason_phrase else ""
    return (
        f"{request.method} {shown_url(request.url)} → {response.status_code}{reason}, "
        f"{len(response.content):,} bytes in {seconds:.2f} s"
    )


def count(n: int, noun: str, plural: str | None = None) -> str:
    """`1 item`, `3 items`, `1,000 users`."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"
