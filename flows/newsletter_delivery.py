"""Mailing one issue through the ledger: claim the unsent rows, send, record each answer.

`deliver` is the send task's work, apart from Prefect so the benchmark measures exactly it.
Rows are claimed (`sending`) a block at a time just before their messages are handed to the
sender, so a crash leaves at most what the sender had read ahead unconfirmed (the next
attempt settles those as failed and never resends them: no one is mailed twice). The
server's answers are written by a group-commit writer: each 250 is queued at once and written
with the others that arrived meanwhile (one UPDATE per batch, every few milliseconds), so
sending never waits on the database. Each message carries a Message-ID made of the issue and
the ledger row, the same on every attempt, recognisable downstream.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any

from sqlalchemy.engine import Engine

from blocks.smtp import SmtpConfig
from db.models import utcnow
from db.newsletter import Claimed, Mark, claim_deliveries, mark_deliveries, release_claim
from flows.newsletter_mail import (
    Outgoing,
    QuotedTemplate,
    Result,
    SendTotals,
    build_message,
    send_all,
)
from flows.newsletter_render import PLACEHOLDERS, personal_values

# How often the writer records the answers that arrived (seconds).
FLUSH_SECONDS = 0.05
# Messages a connection takes at a time, and rows claimed per ledger write. What a crash can
# leave unconfirmed is what the sender holds: the chunks in the connections' hands, the
# connections x CHUNK it reads ahead, and the block being claimed (45 with 4 connections), of
# which only the messages in flight (one per connection) can have reached the server.
CHUNK = 5
CLAIM_BLOCK = 5


def most_unconfirmed(connections: int) -> int:
    """The most rows a crash mid-send can leave unconfirmed."""
    return 2 * connections * CHUNK + CLAIM_BLOCK


@dataclass(frozen=True)
class Letter:
    """What every message of an issue shares."""

    newsletter_id: int
    subject: str
    html: str
    text: str
    unsubscribe_base: str  # e.g. http://host/api/v1/unsubscribe


class LedgerWriter:
    """Records send results in the ledger in batches, off the event loop (group commit)."""

    def __init__(self, engine: Engine, claim: str, flush_seconds: float = FLUSH_SECONDS):
        self.engine = engine
        self.claim = claim
        self.flush_seconds = flush_seconds
        self.pending: list[Mark] = []
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def record(self, result: Result) -> None:
        """Queue one answer (called by the sender for each message, exactly once)."""
        self.pending.append(
            Mark(result.key, result.status, result.code, result.answer, result.attempts, utcnow())
        )

    def _write(self, marks: list[Mark]) -> None:
        with self.engine.begin() as conn:
            mark_deliveries(conn, self.claim, marks)

    async def flush(self) -> None:
        marks, self.pending = self.pending, []
        if marks:
            await asyncio.to_thread(self._write, marks)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.flush_seconds)
            await self.flush()

    async def __aenter__(self) -> LedgerWriter:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._stopping.set()
        if self._task is not None:
            await self._task
        await self.flush()


def message_domain(from_address: str) -> str:
    """The domain Message-IDs are made in: the sender's."""
    address = parseaddr(from_address)[1]
    return address.rpartition("@")[2] or "localhost"


@dataclass(frozen=True)
class Parts:
    """An issue's text and HTML parts, encoded once for all its messages."""

    text: QuotedTemplate
    html: QuotedTemplate

    @classmethod
    def of(cls, letter: Letter) -> Parts:
        return cls(
            QuotedTemplate(letter.text, PLACEHOLDERS), QuotedTemplate(letter.html, PLACEHOLDERS)
        )


def message_for(
    letter: Letter, parts: Parts, row: Claimed, from_address: str, domain: str
) -> Outgoing:
    """The personalised message of one ledger row."""
    unsubscribe = f"{letter.unsubscribe_base}/{row.token or 'test'}"
    message = build_message(
        from_address=from_address,
        to_address=row.email,
        to_name=row.name,
        subject=letter.subject,
        html=parts.html.fill(personal_values(row.name, unsubscribe, html=True)),
        text=parts.text.fill(personal_values(row.name, unsubscribe)),
        message_id=f"<nl{letter.newsletter_id}.d{row.id}@{domain}>",
        list_unsubscribe=unsubscribe if row.token else None,
    )
    return Outgoing(key=row.id, to_address=row.email, message=message)


async def claimed_outgoing(
    engine: Engine, letter: Letter, rows: Sequence[Claimed], from_address: str, claim: str
) -> AsyncIterator[Outgoing]:
    """The rows' messages, each yielded only once its row is claimed in the ledger (a block
    of CLAIM_BLOCK per write, as the sender reads ahead)."""
    domain = message_domain(from_address)
    parts = Parts.of(letter)

    def take(block: Sequence[Claimed]) -> set[int]:
        with engine.begin() as conn:
            return claim_deliveries(conn, claim, [r.id for r in block])

    for start in range(0, len(rows), CLAIM_BLOCK):
        block = rows[start : start + CLAIM_BLOCK]
        claimed = await asyncio.to_thread(take, block)
        for row in block:
            if row.id in claimed:
                yield message_for(letter, parts, row, from_address, domain)


async def deliver(
    engine: Engine,
    letter: Letter,
    rows: Sequence[Claimed],
    smtp: SmtpConfig,
    *,
    claim: str,
    connections: int,
    pace: Callable[[int], Awaitable[Any]] | None = None,
    retry_delay: float = 1.0,
) -> SendTotals:
    """Send the rows' messages and record every answer in the ledger. When sending stops
    early (the server went away), the claimed rows the sender never handed over are queued
    again for the next attempt."""
    try:
        async with LedgerWriter(engine, claim) as writer:
            return await send_all(
                smtp,
                claimed_outgoing(engine, letter, rows, smtp.from_address, claim),
                connections=connections,
                on_result=writer.record,
                pace=pace,
                retry_delay=retry_delay,
                chunk=CHUNK,
            )
    except Exception:
        with engine.begin() as conn:
            release_claim(conn, claim)
        raise
