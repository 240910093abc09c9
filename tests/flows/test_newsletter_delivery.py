"""The send task's work (`deliver`) against a real SMTP server and the ledger: what a retried
task sends, and what a failed attempt leaves for it."""

from __future__ import annotations

import asyncio
import uuid

from sqlalchemy.engine import Engine

from blocks.smtp import SmtpConfig
from db.newsletter import (
    Recipient,
    delivery_counts,
    queue_deliveries,
    save_newsletter,
    unsent_deliveries,
)
from flows.newsletter_delivery import Letter, deliver
from flows.newsletter_mail import SmtpUnavailable
from flows.newsletter_render import NAME_PLACEHOLDER, UNSUBSCRIBE_PLACEHOLDER
from tests.utils.ports import free_port
from tests.utils.smtp_server import serve_smtp

FROM = "Digest <digest@example.com>"


def issue(engine: Engine, recipients: int) -> Letter:
    html = f"<p>Hi {NAME_PLACEHOLDER}</p><a href='{UNSUBSCRIBE_PLACEHOLDER}'>unsubscribe</a>"
    text = f"Hi {NAME_PLACEHOLDER}\nUnsubscribe: {UNSUBSCRIBE_PLACEHOLDER}\n"
    with engine.begin() as conn:
        newsletter_id = save_newsletter(
            conn,
            {
                "flow_run_id": uuid.uuid4(),
                "job_id": None,
                "job_name": "t",
                "workspace_id": "ws",
                "subject": "Subject",
                "html": html,
                "text": text,
                "test_mode": False,
            },
            [],
        )
        people = [
            Recipient(f"r{i}.{newsletter_id}@example.com", f"R {i}") for i in range(recipients)
        ]
        queue_deliveries(conn, newsletter_id, people)
    return Letter(newsletter_id, "Subject", html, text, "http://127.0.0.1:8000/api/v1/unsubscribe")


def attempt(engine: Engine, letter: Letter, smtp: SmtpConfig) -> int:
    with engine.connect() as conn:
        rows = unsent_deliveries(conn, letter.newsletter_id)
    totals = asyncio.run(
        deliver(engine, letter, rows, smtp, claim=uuid.uuid4().hex, connections=2, retry_delay=0.05)
    )
    return totals.sent


def test_an_attempt_that_cannot_reach_the_server_leaves_every_row_for_the_retry(
    sqlite_engine: Engine,
):
    """The claims it took are released (not left unconfirmed), so the task's retry sends each
    recipient exactly one e-mail."""
    letter = issue(sqlite_engine, 12)
    down = SmtpConfig("127.0.0.1", free_port(), FROM)
    try:
        attempt(sqlite_engine, letter, down)
    except SmtpUnavailable:
        pass
    else:
        raise AssertionError("a server that is down must fail the attempt")
    with sqlite_engine.connect() as conn:
        assert delivery_counts(conn, letter.newsletter_id)["queued"] == 12
    with serve_smtp() as sink:
        assert attempt(sqlite_engine, letter, SmtpConfig("127.0.0.1", sink.port, FROM)) == 12
        assert attempt(sqlite_engine, letter, SmtpConfig("127.0.0.1", sink.port, FROM)) == 0
        assert sorted(sink.by_recipient.values()) == [1] * 12
        mail = sink.messages[0]
        assert "Hi R " in mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        assert mail["List-Unsubscribe"] is None  # no subscriber token: a test recipient
    with sqlite_engine.connect() as conn:
        assert delivery_counts(conn, letter.newsletter_id) == {
            "queued": 0,
            "sending": 0,
            "sent": 12,
            "failed": 0,
        }
