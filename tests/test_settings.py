"""Settings: one class, URLs normalised, no open API without keys."""

import pytest
from pydantic import ValidationError

from settings import PROJECT_DIR, Settings


@pytest.mark.parametrize(
    "url",
    ["postgres://u:p@db:5432/app", "postgresql://u:p@db:5432/app"],
)
def test_postgres_urls_use_psycopg(url):
    assert Settings(database_url=url).database_url == "postgresql+psycopg://u:p@db:5432/app"


def test_default_database_is_sqlite_under_the_project(monkeypatch):
    monkeypatch.delenv("DATABASE_URL", raising=False)
    url = Settings(_env_file=None).database_url
    assert url == f"sqlite:///{PROJECT_DIR / '.data' / 'pipelines.db'}"


def test_non_loopback_host_needs_api_keys():
    with pytest.raises(ValidationError, match="API_KEYS"):
        Settings(api_host="0.0.0.0")
    settings = Settings(api_host="0.0.0.0", api_keys="k1, k2")
    assert settings.api_key_list == ["k1", "k2"]
    assert "k1" not in repr(settings)


@pytest.mark.parametrize(
    ("worker_type", "limit", "prefetch"), [("warm-process", 128, 60), ("process", 4, 20)]
)
def test_pool_limit_and_prefetch_default_by_worker_type(monkeypatch, worker_type, limit, prefetch):
    monkeypatch.delenv("WORK_POOL_CONCURRENCY", raising=False)  # the suite sets it
    monkeypatch.delenv("WORKER_PREFETCH_SECONDS", raising=False)
    settings = Settings(worker_type=worker_type)
    assert (settings.pool_concurrency, settings.prefetch_seconds) == (limit, prefetch)
    chosen = Settings(worker_type=worker_type, work_pool_concurrency=7, worker_prefetch_seconds=5)
    assert (chosen.pool_concurrency, chosen.prefetch_seconds) == (7, 5)


def test_the_stack_hands_the_prefetch_to_the_worker(monkeypatch):
    from deployments import stack

    monkeypatch.delenv("PREFECT_WORKER_PREFETCH_SECONDS", raising=False)
    monkeypatch.setattr(stack, "get_settings", lambda: Settings(worker_prefetch_seconds=42))
    assert stack.stack_env()["PREFECT_WORKER_PREFETCH_SECONDS"] == "42"
    monkeypatch.setenv("PREFECT_WORKER_PREFETCH_SECONDS", "3")  # Prefect's own name wins
    assert stack.stack_env()["PREFECT_WORKER_PREFETCH_SECONDS"] == "3"


def test_prefect_off_loopback_needs_its_auth_string_which_every_process_uses(monkeypatch):
    """Security item 1: Prefect's API lets anyone who reaches it write deployments."""
    from deployments import stack
    from settings import get_settings

    monkeypatch.delenv("PREFECT_SERVER_API_AUTH_STRING", raising=False)
    with pytest.raises(ValidationError, match="PREFECT_SERVER_API_AUTH_STRING"):
        Settings(prefect_host="0.0.0.0")
    Settings(prefect_host="127.0.0.1")  # loopback: no auth needed

    monkeypatch.setenv("PREFECT_HOST", "0.0.0.0")
    monkeypatch.setenv("PREFECT_SERVER_API_AUTH_STRING", "admin:s3cret")
    monkeypatch.delenv("PREFECT_API_AUTH_STRING", raising=False)
    get_settings.cache_clear()
    try:
        env = stack.stack_env()
        assert env["PREFECT_SERVER_API_AUTH_STRING"] == "admin:s3cret"  # as the user set it
        assert env["PREFECT_API_AUTH_STRING"] == "admin:s3cret"  # every client's
        assert env["PREFECT_API_URL"] == "http://127.0.0.1:4200/api"  # reached locally
    finally:
        get_settings.cache_clear()


def test_a_dead_process_waits_longer_each_time_up_to_half_a_minute():
    from deployments.stack import restart_delay

    assert [restart_delay(n) for n in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert restart_delay(10_000) == 30
