"""SmtpServer: the mail server a newsletter's issues are sent through, named by a block."""

from __future__ import annotations

from email.utils import parseaddr
from typing import Literal

from prefect.blocks.core import Block
from pydantic import Field, SecretStr, field_validator

from flows.newsletter_mail import SmtpConfig


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
    security: Literal["none", "starttls", "ssl"] = Field(
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
