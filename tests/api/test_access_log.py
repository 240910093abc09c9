"""Fault-report item (newcomer issue 13): our API logs every request at INFO, with the status
the client got, even when Prefect's logging has quieted uvicorn's."""

from __future__ import annotations

import logging

from fastapi.testclient import TestClient

from api.access_log import access_line
from api.main import create_app
from settings import Settings, get_settings


def test_the_line_reads_like_an_access_log():
    assert access_line("GET", "/api/records", 200, 0.0031, "127.0.0.1") == (
        "GET /api/records 200 in 3.1 ms from 127.0.0.1"
    )
    assert access_line("POST", "/x", 503, 1.5, None) == "POST /x 503 in 1500.0 ms"


def test_every_request_is_logged_with_the_status_the_client_got(
    prefect_api_url, sqlite_engine, caplog
):
    app = create_app(sqlite_engine)
    app.dependency_overrides[get_settings] = lambda: Settings(api_keys="k1")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert logging.getLogger("api.access").isEnabledFor(logging.INFO)  # the app set it
        with caplog.at_level(logging.INFO, logger="api.access"):
            client.get("/health")
            client.get("/api/records", params={"token": "not-logged"})  # no key: 401
    lines = [r.getMessage() for r in caplog.records if r.name == "api.access"]
    assert lines[0].startswith("GET /health 200 in ")
    assert lines[1].startswith("GET /api/records 401 in ")
    assert "not-logged" not in "\n".join(lines)
