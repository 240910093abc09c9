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
