"""HTTP helpers for pipelines: which failures deserve a retry, and how to say what failed."""

from __future__ import annotations

from typing import Any

import httpx
from sqlalchemy import exc as sa_exc

from db.errors import describe_database_error

RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})


def is_retryable(exc: BaseException | None) -> bool:
    """Timeouts, dropped connections and 5xx/429 answers may pass; other 4xx answers will not."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code in RETRYABLE_STATUS or exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


def retry_on_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: retry the task only when its failure was transient."""
    return is_retryable(state.data if isinstance(state.data, BaseException) else None)


def raise_for_status(response: httpx.Response) -> None:
    """Raise HTTPStatusError with a one-line message naming status, method and URL."""
    if response.is_success:
        return
    request = response.request
    message = (
        f"HTTP {response.status_code} {response.reason_phrase} from {request.method} {request.url}"
    )
    raise httpx.HTTPStatusError(message, request=request, response=response)


def describe_error(exc: BaseException) -> str:
    """A short, secret-free description of a failure for outcomes, history and run states
    (a database error without its statement or data: db.errors)."""
    if isinstance(exc, sa_exc.SQLAlchemyError):
        return describe_database_error(exc)
    if isinstance(exc, httpx.HTTPStatusError):
        return str(exc)
    if isinstance(exc, httpx.TimeoutException):
        return f"timeout: {type(exc).__name__} calling {exc.request.method} {exc.request.url}"
    if isinstance(exc, httpx.TransportError):
        return f"connection error: {type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"
