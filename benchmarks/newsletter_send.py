"""Mailing an issue: our send path versus raw aiosmtplib, and scrape + generate of 500 items.

Run: `uv run python -m benchmarks.newsletter_send [--subscribers N] [--connections C]
[--repeat R] [--items M] [--only sqlite|postgres]`.

The SMTP server is aiosmtpd in its own process (`python -m tests.utils.smtp_server`, which
only counts), on 127.0.0.1. Each round, alternating:

- ours: `flows.newsletter_delivery.deliver` (the send task's work): for each of N ledger rows
  of a freshly queued issue in a scratch database (SQLite, then PostgreSQL at
  `TEST_POSTGRES_URL`), the claim (a block of rows at a
  time, before sending), the personalised message (name and unsubscribe link in the HTML and
  text parts, Message-ID, List-Unsubscribe headers), the send over C reused connections,
  and the 250 recorded in the ledger (group commit).
- raw: aiosmtplib, C connections, each `sendmail`-ing its share of the same N messages,
  already built and serialised before the clock starts: the floor, with no ledger and no
  personalisation.

Then scrape + generate: M items in 5 RSS feeds served by a local HTTP server, fetched with
`fetch_sources`, selected, and rendered with `render_issue` (HTML with inlined CSS, and
text). Nothing is asserted about the times.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import aiosmtplib
import httpx
from sqlalchemy.engine import Engine

from blocks.smtp import SmtpConfig
from db.engine import create_db_engine
from db.migrate import upgrade
from db.newsletter import Recipient, queue_deliveries, save_newsletter, unsent_deliveries
from flows.newsletter_delivery import Letter, Parts, deliver, message_domain, message_for
from flows.newsletter_mail import smtp_bytes
from flows.newsletter_render import render_issue
from flows.newsletter_sources import RssSource, fetch_sources, select_items
from settings import normalise_database_url
from tests.utils.http_source import Reply, serve_http_source
from tests.utils.ports import free_port
from tests.utils.postgres import scratch_postgres

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"

FROM = "AI Digest <digest@example.com>"


@contextmanager
def smtp_server() -> Iterator[int]:
    """The counting SMTP server in its own process; its port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.utils.smtp_server", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
        yield port
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def sample_issue(items: int = 15) -> tuple[str, str, str]:
    """A realistic issue: its subject, HTML and text."""

    class Item:
        def __init__(self, i: int):
            self.title = f"Story {i}: what changed in open models this week"
            self.url = f"https://news.example.com/stories/{i}"
            self.source, self.source_label = "rss", "rss https://news.example.com/feed"
            self.published_at = datetime.now(UTC)
            self.summary = "A paragraph about the story, as the feed gives it. " * 4
            self.author = None

    issue = render_issue(
        job_name="Daily AI Digest", day=date.today(), items=[Item(i) for i in range(items)]
    )
    return issue.subject, issue.html, issue.text


def ledger(engine: Engine, subscribers: int) -> Letter:
    """A new issue with `subscribers` queued ledger rows."""
    subject, html, text = sample_issue()
    with engine.begin() as conn:
        newsletter_id = save_newsletter(
            conn,
            {
                "flow_run_id": uuid.uuid4(),
                "job_id": None,
                "job_name": "bench",
                "workspace_id": "bench",
                "subject": subject,
                "html": html,
                "text": text,
                "test_mode": False,
            },
            [],
        )
        people = [Recipient(f"reader{i}@example.org", f"Reader {i}") for i in range(subscribers)]
        queue_deliveries(conn, newsletter_id, people)
    return Letter(newsletter_id, subject, html, text, "http://127.0.0.1:8000/api/v1/unsubscribe")


async def ours(engine: Engine, letter: Letter, smtp: SmtpConfig, connections: int) -> float:
    with engine.connect() as conn:
        rows = unsent_deliveries(conn, letter.newsletter_id)
    started = time.perf_counter()
    totals = await deliver(
        engine, letter, rows, smtp, claim=uuid.uuid4().hex, connections=connections
    )
    elapsed = time.perf_counter() - started
    assert totals.sent == len(rows), totals
    return elapsed


async def raw(port: int, messages: list[tuple[str, bytes]], connections: int) -> float:
    sender = "digest@example.com"
    clients = [
        aiosmtplib.SMTP(hostname="127.0.0.1", port=port, start_tls=False)
        for _ in range(connections)
    ]
    started = time.perf_counter()
    await asyncio.gather(*(c.connect() for c in clients))

    async def share(client: aiosmtplib.SMTP, mine: list[tuple[str, bytes]]) -> None:
        for to, data in mine:
            await client.sendmail(sender, [to], data)

    await asyncio.gather(*(share(c, messages[k::connections]) for k, c in enumerate(clients)))
    await asyncio.gather(*(c.quit() for c in clients))
    return time.perf_counter() - started


def prebuilt(engine: Engine, letter: Letter) -> list[tuple[str, bytes]]:
    """The same messages ours sends, built and serialised ahead (the raw method's input)."""
    with engine.connect() as conn:
        rows = unsent_deliveries(conn, letter.newsletter_id)
    domain, parts = message_domain(FROM), Parts.of(letter)
    built = []
    for row in rows:
        out = message_for(letter, parts, row, FROM, domain)
        data = smtp_bytes(out.message)
        assert data is not None
        built.append((out.to_address, data))
    return built


def feed(n: int, feed_no: int) -> bytes:
    now = datetime.now(UTC)
    entries = "".join(
        f"<item><title>Story {feed_no}-{i}</title>"
        f"<link>https://news.example.com/{feed_no}/{i}</link>"
        f"<description>&lt;p&gt;About story {i}, in a paragraph of text.&lt;/p&gt;</description>"
        f"<pubDate>{(now - timedelta(minutes=i)).strftime('%a, %d %b %Y %H:%M:%S +0000')}"
        "</pubDate></item>"
        for i in range(n)
    )
    return (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>f</title>'
        f"<link>https://news.example.com</link><description>d</description>{entries}"
        "</channel></rss>"
    ).encode()


async def scrape_and_generate(url: str, feeds: int, items: int) -> tuple[float, float, int]:
    sources = [RssSource(type="rss", url=f"{url}/feed{k}.xml") for k in range(feeds)]
    started = time.perf_counter()
    async with httpx.AsyncClient() as client:
        scraped = await fetch_sources(client, sources, reddit_base_url=url)
    chosen = select_items(scraped.items, now=datetime.now(UTC), days_back=1, max_items=items)
    scraped_at = time.perf_counter()
    render_issue(job_name="Daily AI Digest", day=date.today(), items=chosen)
    return scraped_at - started, time.perf_counter() - scraped_at, len(chosen)


def databases(only: str | None) -> Iterator[tuple[str, str]]:
    """Scratch databases, migrated: SQLite, then PostgreSQL (unless `only` names one)."""
    if only in (None, "sqlite"):
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{Path(folder) / 'bench.db'}"
            upgrade(url)
            yield "SQLite", url
    if only in (None, "postgres"):
        admin = normalise_database_url(os.environ.get("TEST_POSTGRES_URL", DEFAULT_PG))
        with scratch_postgres(admin, prefix="sp_bench_") as url:
            yield "PostgreSQL", url


def report(title: str, times: dict[str, list[float]], n: int) -> None:
    floor = statistics.median(times["raw aiosmtplib"])
    print(f"\n{title}, median of {len(times['raw aiosmtplib'])}:")
    for name, runs in times.items():
        m = statistics.median(runs)
        print(
            f"  {name:16s} {m:6.2f} s  {n / m:7,.0f} msg/s  {m / floor:.2f}x raw"
            f"  runs {[round(t, 2) for t in runs]}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=10_000)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--items", type=int, default=500)
    parser.add_argument("--only", choices=("sqlite", "postgres"))
    args = parser.parse_args()
    n, c = args.subscribers, args.connections

    with smtp_server() as port:
        for database, url in databases(args.only):
            engine = create_db_engine(url)
            smtp = SmtpConfig("127.0.0.1", port, FROM)
            times: dict[str, list[float]] = {"raw aiosmtplib": [], "ours (deliver)": []}
            for _ in range(args.repeat):
                messages = prebuilt(engine, ledger(engine, n))
                times["raw aiosmtplib"].append(asyncio.run(raw(port, messages, c)))
                letter = ledger(engine, n)
                times["ours (deliver)"].append(asyncio.run(ours(engine, letter, smtp, c)))
            engine.dispose()
            report(f"{n:,} messages over {c} connections, {database} ledger", times, n)

    feeds = 5
    per_feed = -(-args.items // feeds)
    with serve_http_source() as source:
        for k in range(feeds):
            source.route(
                f"/feed{k}.xml", Reply(200, feed(per_feed, k), {"content-type": "application/xml"})
            )
        rounds = [
            asyncio.run(scrape_and_generate(source.url, feeds, args.items))
            for _ in range(args.repeat)
        ]
    scrape_s = statistics.median(r[0] for r in rounds)
    render_s = statistics.median(r[1] for r in rounds)
    print(
        f"\nscrape + generate, {rounds[0][2]} items from {feeds} RSS feeds: scrape "
        f"{scrape_s * 1000:.0f} ms, generate {render_s * 1000:.0f} ms, "
        f"total {(scrape_s + render_s) * 1000:.0f} ms (median of {args.repeat})"
    )


if __name__ == "__main__":
    main()
