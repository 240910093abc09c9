"""Parameters of the newsletter pipeline: which actions run, and the job's config."""

from __future__ import annotations

from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, field_validator

from blocks.validators import check_block_name

Action = Literal["scrape", "generate", "send"]
ACTIONS: tuple[Action, ...] = ("scrape", "generate", "send")
SourceType = Literal["rss", "reddit", "html"]
BlockName = Annotated[str, AfterValidator(check_block_name)]
WorkspaceId = Annotated[
    str,
    Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"),
]


def check_actions(actions: list[Action]) -> list[Action]:
    """Each action once, in pipeline order; `generate` needs `scrape` before it (`send`
    alone sends the job's latest issue)."""
    if len(set(actions)) != len(actions):
        raise ValueError("each action may be given once")
    if actions != sorted(actions, key=ACTIONS.index):
        raise ValueError("actions run in the order scrape, generate, send")
    if "generate" in actions and "scrape" not in actions:
        raise ValueError("generate needs scrape before it")
    return actions


Actions = Annotated[list[Action], Field(min_length=1), AfterValidator(check_actions)]


class NewsletterConfig(BaseModel):
    """A job's `config`: what to scrape, how to write it, whom to send it to."""

    model_config = ConfigDict(extra="forbid")

    max_items: int = Field(default=10, ge=1, le=500, description="Items in one issue")
    days_back: float = Field(
        default=1, gt=0, le=366, description="Only items published in this many days"
    )
    sources: list[SourceType] | None = Field(
        default=None, description="Source types to use; default: all the workspace's sources"
    )
    test_mode: bool = Field(
        default=False, description="Generate and store the issue; send only to test_recipients"
    )
    test_recipients: list[EmailStr] = Field(default_factory=list, max_length=50)
    tone: str | None = Field(default=None, max_length=200, examples=["professional"])
    chat_model: BlockName | None = Field(
        default=None, description="ChatModel block that writes the intro and summaries"
    )
    smtp_server: BlockName | None = Field(
        default=None, description="SmtpServer block; default: the SMTP_* settings"
    )
    rate_limit: BlockName | None = Field(
        default=None,
        description="A Prefect global concurrency limit with slot decay: messages per second",
    )

    @field_validator("sources")
    @classmethod
    def _unique_sources(cls, value: list[SourceType] | None) -> list[SourceType] | None:
        return list(dict.fromkeys(value)) if value is not None else None


class NewsletterParameters(BaseModel):
    """What a newsletter job runs with (its deployment's parameters)."""

    model_config = ConfigDict(extra="forbid")

    job_name: str = Field(min_length=1, max_length=200, examples=["Daily AI Digest"])
    workspace_id: WorkspaceId
    actions: Actions = Field(default_factory=lambda: list(ACTIONS))
    config: NewsletterConfig = Field(default_factory=NewsletterConfig)
    timezone: str = Field(default="UTC", description="The job's time zone: the issue's date")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value
