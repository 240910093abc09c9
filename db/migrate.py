"""Bring a database to the newest schema: `python -m db.migrate [URL]`."""

from __future__ import annotations

import sys
from pathlib import Path

from alembic import command
from alembic.config import Config

from settings import get_settings, normalise_database_url

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str | None = None) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    # ConfigParser interpolation: a literal % in a password must be doubled.
    config.set_main_option(
        "sqlalchemy.url",
        normalise_database_url(url or get_settings().database_url).replace("%", "%%"),
    )
    return config


def upgrade(url: str | None = None, revision: str = "head") -> None:
    """Apply every migration up to `revision`; a no-op when the schema is current."""
    command.upgrade(alembic_config(url), revision)


if __name__ == "__main__":
    upgrade(sys.argv[1] if len(sys.argv) > 1 else None)
    print("database schema is current")
