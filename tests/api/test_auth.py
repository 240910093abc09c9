"""With API keys configured, every route but /health needs a bearer key."""

from __future__ import annotations

from fastapi.testclient import TestClient

from api.main import create_app
from settings import Settings, get_settings


def test_routes_need_a_bearer_key_but_health_does_not(prefect_api_url, sqlite_engine):
    app = create_app(sqlite_engine)
    app.dependency_overrides[get_settings] = lambda: Settings(api_keys="k1,k2")
    with TestClient(app) as client:
        assert client.get("/health").status_code == 200
        assert client.get("/api/schedules").status_code == 401
        assert (
            client.get("/api/records", headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        assert client.get("/api/records", headers={"Authorization": "Bearer k2"}).status_code == 200
