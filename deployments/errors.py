"""What the schedule service refuses, as exceptions the API turns into 422, 404 and 409."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

FieldErrors = list[dict[str, Any]]


def field_error(loc: Sequence[str | int], msg: str) -> dict[str, Any]:
    """One bad field, in FastAPI's shape (loc, msg, type)."""
    return {"loc": list(loc), "msg": msg, "type": "value_error"}


def prefixed(errors: Sequence[Any], *loc: str | int) -> FieldErrors:
    """Pydantic's errors with `loc` put in front of each location."""
    return [
        {"loc": [*loc, *e["loc"]], "msg": e["msg"], "type": e.get("type", "value_error")}
        for e in errors
    ]


class SpecError(ValueError):
    """The spec is invalid; `errors` lists each bad field as FastAPI does (loc, msg, type)."""

    def __init__(self, errors: FieldErrors):
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


class ScheduleNotFound(LookupError):
    """No schedule of that name; `noun` is what the caller's API calls a schedule (a job...)."""

    def __init__(self, name: str, noun: str = "schedule"):
        super().__init__(f"{noun} {name!r} not found")
        self.name = name


class ScheduleExists(ValueError):
    """The name is taken (by a schedule of this pipeline, or of another one)."""

    def __init__(self, name: str, message: str | None = None):
        super().__init__(message or f"schedule {name!r} already exists")
        self.name = name


class RunConflict(ValueError):
    """The run's state does not allow the change (cancel a finished run, retry a running one)."""


class IdempotencyConflict(ValueError):
    """An Idempotency-Key seen before, with other parameters than its first request's."""

    def __init__(self, key: str):
        super().__init__(
            f"Idempotency-Key {key!r} was used for a run with other parameters; "
            "use a new key for a different request"
        )
        self.key = key
