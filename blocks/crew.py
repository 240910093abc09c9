"""Blocks of the crew pipeline: the crew API, and a users table in another database."""

from __future__ import annotations

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator
from sqlalchemy.engine import Engine

from flows.api_call_params import check_http_url, check_identifier


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
        from db.engine import get_engine

        return get_engine(self.url.get_secret_value())
