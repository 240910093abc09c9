"""The newsletter pipeline: scrape the workspace's sources, generate the issue, send it.

A retried run (its task or the whole flow run) resumes: the issue an earlier attempt stored
is reused, and the ledger sends only what no attempt has confirmed sent.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import asdict, fields
from datetime import UTC, date, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.asyncio import rate_limit
from prefect.runtime import deployment, flow_run
from pydantic import TypeAdapter, ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from blocks.chat_model import ChatError, resolve_chat_model, write_copy
from blocks.smtp import resolve_smtp
from db.engine import get_engine
from db.models import Newsletter
from db.newsletter import (
    Recipient,
    active_recipients,
    delivery_counts,
    failed_deliveries,
    get_newsletter_of_run,
    latest_newsletter_of_job,
    list_sources,
    newsletter_items,
    queue_deliveries,
    save_newsletter,
    settle_unconfirmed,
    unsent_deliveries,
)
from flows.common import (
    ReportedFailure,
    artifact_key,
    current_flow_run_id,
    current_schedule_name,
    publish_table,
    recorded_run,
    unwalked,
)
from flows.http import describe_error
from flows.narration import count, run_logger
from flows.newsletter_delivery import Letter, deliver
from flows.newsletter_params import ACTIONS, Action, NewsletterConfig, WorkspaceId
from flows.newsletter_render import Issue, render_issue
from flows.newsletter_sources import Item, SourceSpec, fetch_sources, select_items
from flows.run_controls import flow_options
from settings import get_settings

SOURCES = TypeAdapter(list[SourceSpec])
ITEM_FIELDS = tuple(f.name for f in fields(Item))


class NothingToSend(ReportedFailure):
    """Every source failed, or the job has no issue to send."""


class Journal:
    """The run's log lines in the domain's words: to Prefect's log, and kept for the history."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, message: str, *, warning: bool = False) -> None:
        logger = run_logger()
        (logger.warning if warning else logger.info)("%s", message)
        self.lines.append(f"{datetime.now(UTC).isoformat(timespec='seconds')} {message}")


# -- scrape -----------------------------------------------------------------------------------


def workspace_sources(engine: Engine, workspace_id: str, types: Sequence[str] | None) -> list[Any]:
    """The workspace's sources of the given types (all when None), validated; the run fails
    with the reason when there are none or they are invalid."""
    with Session(engine) as session:
        stored = list_sources(session, workspace_id)
    try:
        sources = [s for s in SOURCES.validate_python(stored) if types is None or s.type in types]
    except ValidationError as exc:
        raise ReportedFailure(f"workspace sources are invalid: {exc}") from None
    if not sources:
        kinds = f" of type {', '.join(types)}" if types else ""
        raise NothingToSend(f"workspace {workspace_id} has no sources{kinds}")
    return sources


@task(cache_policy=NO_CACHE)
async def scrape(
    client: httpx.AsyncClient,
    sources: list[Any],
    config: NewsletterConfig,
    reddit_base_url: str,
    journal: Journal,
) -> tuple[list[Item], dict[str, Any]]:
    """Fetch every source at once; the newest items within days_back, one per URL."""
    scraped = await fetch_sources(client, sources, reddit_base_url=reddit_base_url)
    items = select_items(
        scraped.items,
        now=datetime.now(UTC),
        days_back=config.days_back,
        max_items=config.max_items,
    )
    failures = [{"source": f.label, "error": f.error} for f in scraped.failures]
    journal(
        f"scraped {count(len(items), 'item')} from {count(len(sources), 'source')}"
        f" ({len(scraped.items)} found, {len(failures)} failed"
        + "".join(f"; {f['source']}: {f['error']}" for f in failures)
        + ")",
        warning=bool(failures),
    )
    result = {
        "items_scraped": len(items),
        "items_found": len(scraped.items),
        "sources": [s.label for s in sources],
        "by_source": scraped.fetched,
        "failures": failures,
    }
    return items, result


# -- generate ---------------------------------------------------------------------------------


@task(cache_policy=NO_CACHE)
async def generate(
    client: httpx.AsyncClient,
    items: list[Item],
    *,
    job_name: str,
    day: date,
    config: NewsletterConfig,
    journal: Journal,
) -> tuple[Issue, dict[str, Any]]:
    """Render the issue (HTML with inlined CSS, and text); a ChatModel writes the intro and
    summaries in the job's tone when one is named."""
    intro: str | None = None
    summaries: dict[str, str] | None = None
    note: dict[str, Any] = {}
    if config.chat_model is not None:
        try:
            endpoint = await resolve_chat_model(config.chat_model)
            copy = await write_copy(client, endpoint, items, tone=config.tone, job_name=job_name)
            intro, summaries = copy.intro, copy.summaries
            note = {"ai": True, "summaries_written": len(summaries)}
        except (ChatError, LookupError, httpx.HTTPError) as exc:
            # The template alone still makes a complete issue: send it, say why it is plain.
            note = {"ai": False, "ai_error": describe_error(exc)}
            journal(f"chat model {config.chat_model}: {note['ai_error']}", warning=True)
    issue = render_issue(
        job_name=job_name,
        day=day,
        items=items,
        intro=intro,
        summaries=summaries,
        tone=config.tone,
    )
    journal(f"generated {issue.subject!r}: {count(len(items), 'item')}")
    return issue, note


def store_issue(
    engine: Engine,
    issue: Issue,
    items: Sequence[Item],
    *,
    job_id: uuid.UUID | None,
    job_name: str,
    workspace_id: str,
    test_mode: bool,
) -> int:
    """The issue and its items (with the summaries it shows) in our tables, once per flow run."""
    row = {
        "flow_run_id": current_flow_run_id(),
        "job_id": job_id,
        "job_name": job_name,
        "workspace_id": workspace_id,
        "subject": issue.subject,
        "html": issue.html,
        "text": issue.text,
        "test_mode": test_mode,
    }
    item_rows = [{**asdict(i), "summary": issue.summaries.get(i.url, i.summary)} for i in items]
    with engine.begin() as conn:
        return save_newsletter(conn, row, item_rows)


# -- send -------------------------------------------------------------------------------------


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=[5, 30])
async def send(
    engine: Engine,
    newsletter: Newsletter,
    recipients: list[Recipient],
    config: NewsletterConfig,
    journal: Journal,
) -> dict[str, Any]:
    """One message per recipient not yet sent this issue, over a few reused connections."""
    settings = get_settings()
    assert newsletter.id is not None
    try:
        smtp = await resolve_smtp(config.smtp_server)
    except LookupError as exc:
        raise NothingToSend(str(exc)) from None
    claim = uuid.uuid4().hex
    with engine.begin() as conn:
        unconfirmed = settle_unconfirmed(conn, newsletter.id)
        queue_deliveries(conn, newsletter.id, recipients)
        rows = unsent_deliveries(conn, newsletter.id)
    if unconfirmed:
        journal(
            f"{count(unconfirmed, 'message')} an earlier attempt was sending when it stopped:"
            " recorded as unconfirmed, not sent again",
            warning=True,
        )
    letter = Letter(
        newsletter_id=newsletter.id,
        subject=newsletter.subject,
        html=newsletter.html,
        text=newsletter.text,
        unsubscribe_base=f"{settings.public_api_url.rstrip('/')}/api/v1/unsubscribe",
    )
    limit = config.rate_limit

    async def pace(n: int) -> None:
        if limit is not None:
            await rate_limit(limit, occupy=n, strict=True)

    totals = await deliver(
        engine,
        letter,
        rows,
        smtp,
        claim=claim,
        connections=settings.smtp_connections,
        pace=pace if limit else None,
    )
    with engine.connect() as conn:
        counts = delivery_counts(conn, newsletter.id)
        failures = failed_deliveries(conn, newsletter.id)
    journal(
        f"sent {count(totals.sent, 'e-mail')} of {len(rows)} to send via {smtp.host}:{smtp.port}"
        f" ({totals.failed} failed, {totals.retried} retried); issue total: {counts['sent']}"
        f" sent, {counts['failed']} failed",
        warning=bool(totals.failed),
    )
    return {
        "newsletter_id": newsletter.id,
        "recipients": sum(counts.values()),
        "sent_count": counts["sent"],
        "failed_count": counts["failed"],
        "sent_this_attempt": totals.sent,
        "unconfirmed": unconfirmed,
        "retried": totals.retried,
        "failures": failures,
    }


# -- the flow ---------------------------------------------------------------------------------


def _job_id() -> uuid.UUID | None:
    value = deployment.get_id()
    return uuid.UUID(value) if value else None


def issue_day(timezone: str) -> date:
    """The issue's date: the run's scheduled day in the job's time zone."""
    when = flow_run.get_scheduled_start_time() or datetime.now(UTC)
    return when.astimezone(ZoneInfo(timezone)).date()


def stored_items(session: Session, newsletter_id: int) -> list[Item]:
    """The items an issue was made of, as scrape found them."""
    return [
        Item(**{name: getattr(row, name) for name in ITEM_FIELDS})
        for row in newsletter_items(session, newsletter_id)
    ]


def resumed(issue: Newsletter, items: Sequence[Item], steps: Sequence[str]) -> dict[str, Any]:
    """The scrape and generate results of an issue an earlier attempt of this run made."""
    results: dict[str, Any] = {}
    if "scrape" in steps:
        results["scrape_result"] = {"items_scraped": len(items), "resumed": True}
    if "generate" in steps:
        results["generate_result"] = {
            "newsletter_id": issue.id,
            "items_used": issue.items_used,
            "subject": issue.subject,
            "resumed": True,
        }
    return results


@flow(name="newsletter", **flow_options())
async def newsletter(
    job_name: str,
    workspace_id: WorkspaceId,
    actions: list[Action] | None = None,
    config: NewsletterConfig | None = None,
    timezone: str = "UTC",
) -> dict[str, Any]:
    """Scrape, generate and send one issue of a workspace's newsletter job."""
    engine = get_engine()
    config = config or NewsletterConfig()
    steps = actions or list(ACTIONS)
    job_id = _job_id()
    journal = Journal()
    results: dict[str, Any] = {}

    def finish(outcome: Any) -> None:
        outcome.meta = {**outcome.meta, **results, "logs": journal.lines}

    with (
        recorded_run(
            engine,
            "newsletter",
            finish=finish,
            job_id=str(job_id) if job_id else None,
            workspace_id=workspace_id,
            actions=steps,
            test_mode=config.test_mode,
        ) as outcome,
        Session(engine) as session,
    ):
        issue_row = get_newsletter_of_run(session, outcome.flow_run_id)
        if issue_row is not None and issue_row.id is not None:
            items = stored_items(session, issue_row.id)
            results.update(resumed(issue_row, items, steps))
            journal(f"reusing issue {issue_row.id} of an earlier attempt of this run")
        elif "scrape" in steps:
            async with httpx.AsyncClient(timeout=30, follow_redirects=True) as client:
                sources = workspace_sources(engine, workspace_id, config.sources)
                items, results["scrape_result"] = await scrape(
                    client, sources, config, get_settings().reddit_base_url, unwalked(journal)
                )
                if not items:
                    reason, fatal = _nothing_scraped(results["scrape_result"], config)
                    skipped = {"skipped": True, "reason": reason}
                    results["generate_result"] = skipped
                    if "send" in steps:
                        results["send_result"] = skipped
                    journal(f"nothing to send: {reason}", warning=True)
                    if fatal:
                        raise NothingToSend(reason)
                    return results
                if "generate" in steps:
                    issue, note = await generate(
                        client,
                        unwalked(items),
                        job_name=job_name,
                        day=issue_day(timezone),
                        config=config,
                        journal=unwalked(journal),
                    )
            if "generate" in steps:
                newsletter_id = store_issue(
                    engine,
                    issue,
                    items,
                    job_id=job_id,
                    job_name=job_name,
                    workspace_id=workspace_id,
                    test_mode=config.test_mode,
                )
                issue_row = session.get(Newsletter, newsletter_id)
                await publish_table(
                    artifact_key("newsletter", current_schedule_name()),
                    [{"title": i.title, "url": i.url, "source": i.source_label} for i in items],
                    f"Issue {newsletter_id}: {issue.subject!r}"
                    + (" (test mode)" if config.test_mode else ""),
                )
                results["generate_result"] = {
                    "newsletter_id": newsletter_id,
                    "items_used": len(items),
                    "subject": issue.subject,
                    **note,
                }
        if "send" in steps:
            if issue_row is None:
                issue_row = latest_newsletter_of_job(session, job_id)
            if issue_row is None:
                raise NothingToSend("no issue to send: this job has generated none")
            recipients = _recipients(engine, workspace_id, config)
            if config.test_mode and not recipients:
                results["send_result"] = {
                    "newsletter_id": issue_row.id,
                    "skipped": True,
                    "reason": "test mode: nothing sent",
                    "sent_count": 0,
                }
                journal("test mode: issue stored, nothing sent")
            else:
                results["send_result"] = sent = await send(
                    engine, issue_row, unwalked(recipients), config, unwalked(journal)
                )
                outcome.items_processed = sent["recipients"]
                outcome.items_succeeded = sent["sent_count"]
                outcome.items_failed = sent["failed_count"]
    return results


def _recipients(engine: Engine, workspace_id: str, config: NewsletterConfig) -> list[Recipient]:
    """Test mode: the config's test recipients only; else the workspace's active subscribers."""
    if config.test_mode:
        return [Recipient(str(email)) for email in config.test_recipients]
    with engine.connect() as conn:
        return active_recipients(conn, workspace_id)


def _nothing_scraped(result: dict[str, Any], config: NewsletterConfig) -> tuple[str, bool]:
    """Why nothing was scraped, and whether the run fails for it (every source failed)."""
    failures = result["failures"]
    if failures and not result["items_found"]:
        first = failures[0]
        return f"nothing scraped: every source failed ({first['source']}: {first['error']})", True
    return f"nothing scraped: no items newer than {config.days_back:g} day(s)", False
