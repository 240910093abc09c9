"""Blocks of the crew pipeline: the crew API, and a users table in another database.

Each block comes with its resolver, the one place that says "this block, else the default":
`resolve_crew_api` (a CrewApi block, else the CREW_API_URL setting) and `resolve_user_table`
(a UserSource block's table, else our own users table).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import anyio
import httpx
import sqlalchemy as sa
from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator
from sqlalchemy.engine import Engine

from blocks.base import load_block
from blocks.validators import check_http_url, check_identifier
from db.crew import UserTable, user_source_table, users_table
from db.engine import get_engine
from settings import get_settings


class CrewApi(Block):
    """The crew API the crew pipeline posts each user's context and goal to."""

    _block_type_name = "Crew API"
    _block_type_slug = "crew-api"
    _description = "The run-crew endpoint of a crew API, and its API key if it needs one."

    url: str = Field(
        description="Full URL of the run-crew endpoint, e.g. http://host:8000/run-crew"
    )
    api_key: SecretStr | None = Field(default=None, description="Sent as a Bearer token")

    _url = field_validator("url")(classmethod(lambda cls, v: check_http_url(v)))

    def headers(self) -> dict[str, str]:
        if self.api_key is None:
            return {}
        return {"Authorization": f"Bearer {self.api_key.get_secret_value()}"}


class UserSource(Block):
    """Users read from another database: a table with uid, context and goal columns."""

    _block_type_name = "User Source"
    _block_type_slug = "user-source"
    _description = "A table of users (uid, context, goal) in a SQL database the pipeline reads."

    url: SecretStr = Field(description="SQLAlchemy URL, e.g. postgresql://user:pass@host/app")
    table: str = Field(default="users", description="Table with uid, context and goal columns")

    _table = field_validator("table")(classmethod(lambda cls, v: check_identifier(v)))

    def engine(self) -> Engine:
        return get_engine(self.url.get_secret_value())


@dataclass(frozen=True)
class CrewEndpoint:
    """Where crew calls go, with the headers they carry (an API key: never logged)."""

    url: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def host(self) -> str:
        return httpx.URL(self.url).netloc.decode()


class CrewApiNotConfigured(LookupError):
    """No CrewApi block is named and CREW_API_URL is not set."""


async def resolve_crew_api(block_name: str | None) -> CrewEndpoint:
    """The crew API of the CrewApi block `block_name`, else the CREW_API_URL setting.

    Raises BlockNotFound for an unknown block, CrewApiNotConfigured when neither is given.
    """
    if block_name is not None:
        block = await load_block(CrewApi, block_name)
        return CrewEndpoint(block.url, block.headers())
    url = get_settings().crew_api_url
    if not url:
        raise CrewApiNotConfigured(
            "no crew API: name a CrewApi block in crew_api or set CREW_API_URL"
        )
    return CrewEndpoint(url)


async def resolve_user_table(block_name: str | None) -> UserTable:
    """Our users table, or the table the UserSource block `block_name` names.

    A block's table is read from its database and checked for the uid, context and goal
    columns: BlockNotFound, LookupError (no such table or columns) or a database error.
    """
    if block_name is None:
        return UserTable(get_engine(), users_table())
    block = await load_block(UserSource, block_name)
    engine = block.engine()

    def reflect() -> sa.Table:
        with engine.connect() as conn:
            return user_source_table(conn, block.table)

    return UserTable(engine, await anyio.to_thread.run_sync(reflect))
