"""Destination: another database our pipelines write into, named by a block."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr
from sqlalchemy.engine import Engine

from blocks.base import load_block
from db.engine import get_engine


class Destination(Block):
    """A database that pipelines store rows into; its URL (with credentials) is kept secret."""

    _block_type_name = "Destination"
    _block_type_slug = "destination"
    _description = "A SQL database (SQLite or PostgreSQL URL) that pipelines write rows into."

    url: SecretStr = Field(description="SQLAlchemy URL, e.g. postgresql://user:pass@host/db")

    def engine(self) -> Engine:
        """The shared engine for this database."""
        return get_engine(self.url.get_secret_value())


async def resolve_destination_engine(block_name: str | None) -> Engine:
    """Our own database, or the one the Destination block `block_name` names (BlockNotFound)."""
    if block_name is None:
        return get_engine()
    return (await load_block(Destination, block_name)).engine()
