"""Schemathesis over our OpenAPI schema, against the API served on 127.0.0.1 over the session's
Prefect server: no input the schema allows or refuses makes a server error or a status code the
schema does not document, and every answer matches its documented shape. Then the same
operations with `API_KEYS` set and no key: nothing answers but `/health` and the OpenAPI
description (`/docs`, `/openapi.json`), which are not operations of the schema.

The API here has a database of its own and a work pool no worker polls, so what the fuzzer
creates (schedules, jobs, runs) never runs and no other test sees its rows. Examples are
derandomized (the same cases every run, so CI is repeatable) and bounded: FUZZ_EXAMPLES
(default 12 per operation) makes a longer hunt, e.g. `FUZZ_EXAMPLES=500 make test`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from prefect import get_client
from prefect.utilities.asyncutils import run_coro_as_sync
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from api.main import create_app
from db.engine import create_db_engine
from db.migrate import upgrade
from deployments.work_pool import ensure_work_pool
from settings import Settings, get_settings
from tests.utils.serve import serve_asgi

pytestmark = [pytest.mark.e2e, pytest.mark.fuzz]

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "12"))
FUZZ_POOL = "fuzz-no-worker"
KEY = "fuzz-key"
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]


def serve(tmp_root: Path, name: str, **overrides: Any) -> Iterator[str]:
    url = f"sqlite:///{tmp_root / f'{name}.db'}"
    upgrade(url)
    engine = create_db_engine(url)

    async def pool() -> None:
        async with get_client() as client:
            await ensure_work_pool(client, FUZZ_POOL, 4)

    run_coro_as_sync(pool())
    app = create_app(engine)
    fuzz_settings = get_settings().model_copy(
        update={"work_pool_name": FUZZ_POOL, "database_url": url, **overrides}
    )
    app.dependency_overrides[get_settings] = lambda: fuzz_settings
    with serve_asgi(app) as base_url:
        yield base_url
    engine.dispose()


@pytest.fixture(scope="module")
def open_api(prefect_api_url: str, tmp_root: Path, sqlite_engine: Any) -> Iterator[str]:
    yield from serve(tmp_root, "fuzz")


@pytest.fixture(scope="module")
def keyed_api(prefect_api_url: str, tmp_root: Path) -> Iterator[str]:
    yield from serve(tmp_root, "fuzz-keyed", api_keys=Settings(api_keys=KEY).api_keys)


# The schema our app describes (made without starting it); the calls go to the served app.
SCHEMA = schemathesis.openapi.from_dict(create_app().openapi())
BOUNDED = settings(
    max_examples=EXAMPLES,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)


@SCHEMA.parametrize()
@BOUNDED
def test_no_input_makes_a_server_error_or_an_undocumented_answer(case: Any, open_api: str) -> None:
    case.call_and_validate(base_url=open_api, checks=CHECKS)


@SCHEMA.parametrize()
@settings(BOUNDED, max_examples=3)
def test_with_keys_set_no_operation_answers_without_one(case: Any, keyed_api: str) -> None:
    response = case.call(base_url=keyed_api, headers={"Authorization": ""})
    if case.method.upper() != case.operation.method.upper():
        # An unsupported method (a negative case) is refused before any route runs.
        assert response.status_code in (401, 405), (case.method, case.path, response.text)
    elif case.path == "/health":
        assert response.status_code == 200
    elif case.path.startswith("/api/v1/unsubscribe/"):
        # A subscriber's one-click link: its token is the credential, no key is asked for.
        assert response.status_code in (200, 404, 422), (case.path, response.text)
    else:
        assert response.status_code == 401, (case.method, case.path, response.text)


def test_with_keys_set_only_health_and_the_description_are_public(keyed_api: str) -> None:
    import httpx

    for path in ("/health", "/docs", "/openapi.json"):
        assert httpx.get(f"{keyed_api}{path}").status_code == 200, path
    assert httpx.get(f"{keyed_api}/demo/prices").status_code == 401  # demo routes off: not public
