"""The API app over the session's Prefect server and database."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.engine import Engine

from api.main import create_app
from tests.utils.http_source import HttpSource, prices_source


@pytest.fixture(scope="session")
def api(prefect_api_url: str, work_pool: str, sqlite_engine: Engine) -> Iterator[TestClient]:
    """Our API app, in-process, over the session's Prefect server and SQLite database."""
    with TestClient(create_app(sqlite_engine), base_url="http://127.0.0.1") as client:
        yield client


@pytest.fixture(scope="module")
def source() -> Iterator[HttpSource]:
    """An HTTP source on 127.0.0.1 answering /prices and /down (500); a module may route more,
    or define its own."""
    with prices_source() as source:
        yield source
