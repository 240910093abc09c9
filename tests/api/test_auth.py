"""With API keys configured, every route but /health needs a bearer key."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from fastapi.testclient import TestClient

from api.main import create_app
from api.security import is_loopback
from settings import PROJECT_DIR, Settings, get_settings


def test_routes_need_a_bearer_key_but_health_does_not(prefect_api_url, sqlite_engine):
    app = create_app(sqlite_engine)
    app.dependency_overrides[get_settings] = lambda: Settings(api_keys="k1,k2")
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/health").status_code == 200
        assert client.get("/api/schedules").status_code == 401
        assert (
            client.get("/api/records", headers={"Authorization": "Bearer wrong"}).status_code == 401
        )
        assert client.get("/api/records", headers={"Authorization": "Bearer k2"}).status_code == 200


def test_without_keys_only_loopback_connections_are_served(prefect_api_url, sqlite_engine):
    """However the server was told to listen (`uvicorn --host 0.0.0.0` bypasses API_HOST), a
    request that arrived on a non-loopback address is refused while no keys are set."""
    app = create_app(sqlite_engine)
    app.dependency_overrides[get_settings] = lambda: Settings()
    with TestClient(app, base_url="http://10.1.2.3:8000") as client:
        for path in ("/api/schedules", "/api/records", "/docs", "/openapi.json", "/api/jobs"):
            response = client.get(path)
            assert response.status_code == 403, path
            assert "API_KEYS" in response.json()["detail"]
        assert client.post("/api/schedules", json={}).status_code == 403
        assert client.get("/health").status_code == 200
    with TestClient(app, base_url="http://[::1]:8000") as client:
        assert client.get("/api/schedules").status_code == 200


def test_with_keys_a_public_address_serves_what_the_key_allows(prefect_api_url, sqlite_engine):
    app = create_app(sqlite_engine)
    app.dependency_overrides[get_settings] = lambda: Settings(api_keys="k1")
    with TestClient(app, base_url="http://10.1.2.3:8000") as client:
        assert client.get("/api/schedules").status_code == 401
        key = {"Authorization": "Bearer k1"}
        assert client.get("/api/schedules", headers=key).status_code == 200
        assert client.get("/openapi.json").status_code == 200  # documented as public
        assert client.get("/health").status_code == 200


@pytest.mark.parametrize(
    ("server", "loopback"),
    [
        (("127.0.0.1", 8000), True),
        (("127.8.9.1", 8000), True),
        (("::1", 8000), True),
        (("::ffff:127.0.0.1", 8000), False),  # an IPv4-mapped address is not ::1's loopback
        (("localhost", 80), True),
        (("/run/api.sock", None), True),
        (None, True),
        (("0.0.0.0", 8000), False),
        (("10.1.2.3", 8000), False),
        (("testserver", 80), False),
        (("2001:db8::1", 8000), False),
    ],
)
def test_loopback_addresses(server, loopback):
    assert is_loopback(server) is loopback


def clean_env(tmp_path) -> dict[str, str]:
    """An environment with no Prefect settings, as a new shell has (its own PREFECT_HOME)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "PREFECT_HOME": str(tmp_path / "prefect-home")}


def test_our_api_refuses_to_start_without_a_prefect_api(tmp_path):
    """Fault item 16: `uvicorn api.main:app` alone must not start a Prefect server of its own."""
    probe = (
        "from fastapi.testclient import TestClient\n"
        "import api.main\n"
        "TestClient(api.main.app).__enter__()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=PROJECT_DIR,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "PREFECT_API_URL is not set" in done.stderr
    assert "Starting temporary server" not in done.stderr + done.stdout


def test_our_prefect_server_command_turns_analytics_off(tmp_path):
    shown = subprocess.run(
        [sys.executable, "-m", "deployments.prefect_server", "config", "view"],
        cwd=PROJECT_DIR,
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shown.returncode == 0, shown.stderr
    assert "PREFECT_SERVER_ANALYTICS_ENABLED='false'" in shown.stdout
