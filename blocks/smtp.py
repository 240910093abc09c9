"""SmtpServer: the mail server a newsletter's issues are sent through, named by a block."""

from __future__ import annotations

from dataclasses import dataclass, field
from email.utils import parseaddr
from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from blocks.base import load_block
from settings import get_settings

Security = Literal["none", "starttls", "ssl"]


@dataclass(frozen=True)
class SmtpConfig:
    """Where messages go and how to log in there (the password is never shown)."""

    host: str
    port: int
    from_address: str
    security: Security = "none"
    username: str | None = None
    password: SecretStr | None = field(default=None, repr=False)
    timeout: float = 30.0

    @property
    def sender(self) -> str:
        """The envelope sender: the address part of from_address."""
        return parseaddr(self.from_address)[1]

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"


class SmtpNotConfigured(LookupError):
    """No SmtpServer block is named and SMTP_HOST / SMTP_FROM are not set."""


def check_from_address(value: str) -> str:
    """A From address, bare or with a display name: `Digest <digest@example.com>`."""
    address = parseaddr(value)[1]
    local, at, domain = address.rpartition("@")
    if not (at and local and domain) or any(c.isspace() or c in "<>" for c in address):
        raise ValueError(f"{value!r} is not an e-mail address (e.g. Digest <digest@example.com>)")
    return value


class SmtpServer(Block):
    """An SMTP server that newsletters are sent through, with its login and sender address."""

    _block_type_name = "SMTP Server"
    _block_type_slug = "smtp-server"
    _description = (
        "An SMTP server (host, port, STARTTLS or TLS), the login it wants and the From address "
        "newsletters are sent with."
    )

    host: str = Field(min_length=1, description="Host name or IP of the SMTP server")
    port: int = Field(default=587, ge=1, le=65535, description="587 for STARTTLS, 465 for TLS")
    username: str | None = Field(default=None, description="Login user; none: no login")
    password: SecretStr | None = Field(default=None, description="Login password")
    from_address: str = Field(
        description="The From header and envelope sender, e.g. Digest <digest@example.com>"
    )
    security: Security = Field(
        default="starttls",
        description="starttls: upgrade after connecting (587); ssl: TLS from the start (465); "
        "none: plain text (a local relay only)",
    )
    timeout_seconds: float = Field(default=30.0, gt=0, description="For each SMTP command")

    _from_address = field_validator("from_address")(
        classmethod(lambda cls, v: check_from_address(v))
    )

    def config(self) -> SmtpConfig:
        """What send_all needs to reach this server."""
        return SmtpConfig(
            host=self.host,
            port=self.port,
            from_address=self.from_address,
            security=self.security,
            username=self.username,
            password=self.password,
            timeout=self.timeout_seconds,
        )


async def resolve_smtp(block_name: str | None) -> SmtpConfig:
    """The SmtpServer block `block_name`, else the SMTP_* settings.

    Raises BlockNotFound for an unknown block, SmtpNotConfigured when neither is given.
    """
    if block_name is not None:
        return (await load_block(SmtpServer, block_name)).config()
    settings = get_settings()
    if not settings.smtp_host or not settings.smtp_from:
        raise SmtpNotConfigured(
            "no SMTP server: set SMTP_HOST and SMTP_FROM, or name an SmtpServer block "
            "in the job's config.smtp_server"
        )
    return SmtpConfig(
        host=settings.smtp_host,
        port=settings.smtp_port,
        from_address=settings.smtp_from,
        security=settings.smtp_security,
        username=settings.smtp_username,
        password=settings.smtp_password,
    )
