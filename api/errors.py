"""The error answers of our API, documented in its OpenAPI description (one place).

Every operation may answer what the middleware and the exception handlers of `api/main.py` send:
401 (API_KEYS set, no or a wrong key), 403 (no keys, a connection from off loopback), 502 or
503 with `Retry-After` (Prefect or our database unavailable, or the request deadline), and a
route with a body 400 (a body that is not JSON). A route with a path parameter may answer 404,
one that creates or runs 409 (a name taken, an `Idempotency-Key` reused with other
parameters). Error bodies carry FastAPI's `detail`; the seed systems' routes add their own
envelope fields (`success`, `error`) beside it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, ValidationError

from deployments.errors import SpecError


class ErrorAnswer(BaseModel):
    """What went wrong, in FastAPI's `detail` (a string, or FastAPI's list of field errors)."""

    model_config = ConfigDict(extra="allow")

    detail: str | list[dict[str, Any]]


CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorAnswer, "description": "the name is taken, or an Idempotency-Key reused"}
}
# What any route may answer (but /health, which documents its own 503) ...
EVERY_ROUTE = {
    401: "API_KEYS is set and the request has no valid `Authorization: Bearer` key",
    403: "no API_KEYS are set and the connection did not come from loopback",
    502: "Prefect's API answered an error we did not expect",
    503: "Prefect's API or our database is unavailable, or the request deadline passed",
}
# ... one with a body, and one with a path parameter.
WITH_BODY = {400: "the body is not JSON"}
WITH_PATH = {404: "no such schedule, job, run or row"}
REF = "#/components/schemas/ErrorAnswer"


def document_errors(app: FastAPI) -> None:
    """Describe the error answers of every operation in the app's OpenAPI document (added to
    what FastAPI generates, when it is first asked for; routes that may answer 409 say so
    themselves with `responses=CONFLICT`)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = generate()
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault(
            "ErrorAnswer",
            ErrorAnswer.model_json_schema(ref_template="#/components/schemas/{model}"),
        )
        error = {"application/json": {"schema": {"$ref": REF}}}
        for path, operations in schema["paths"].items():
            if path == "/health":
                continue
            for operation in operations.values():
                answers = {
                    **EVERY_ROUTE,
                    **(WITH_BODY if "requestBody" in operation else {}),
                    **(WITH_PATH if "{" in path else {}),
                }
                for code, description in answers.items():
                    operation["responses"].setdefault(
                        str(code), {"description": description, "content": error}
                    )
        return schema

    app.openapi = openapi  # type: ignore[method-assign]


@contextmanager
def spec_refusals(loc_of: Callable[[tuple[str, ...]], list[str]]) -> Iterator[None]:
    """Refusals of a schedule spec (pydantic's or the service's SpecError) as 422s on the
    fields of a compatible API's payload: `loc_of` maps a spec field's location to its own."""
    try:
        yield
    except ValidationError as exc:
        errors: list[dict[str, Any]] = [dict(e) for e in exc.errors()]
    except SpecError as exc:
        errors = exc.errors
    else:
        return
    raise RequestValidationError(
        [{**e, "loc": ["body", *loc_of(tuple(str(p) for p in e["loc"]))]} for e in errors]
    ) from None
