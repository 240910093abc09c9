"""The newsletter scheduler end to end: a real Prefect server and worker, a real SMTP server
(aiosmtpd) and local RSS, Atom, Reddit and HTML sources; faults at the sources and the
server, and a run killed in the middle of sending."""

from __future__ import annotations

import json
import os
import signal
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from flows.newsletter_delivery import most_unconfirmed
from settings import get_settings
from tests.utils.http_source import HttpSource, Reply, serve_http_source
from tests.utils.runs import flow_run, wait_for_run, wait_until
from tests.utils.services import CONTENT_PORT, SMTP_PORT
from tests.utils.smtp_server import SmtpSink, serve_smtp

pytestmark = pytest.mark.e2e
XML = {"content-type": "application/xml"}
HTML = {"content-type": "text/html"}


@pytest.fixture(scope="module")
def sink() -> Iterator[SmtpSink]:
    """The SMTP server at SMTP_HOST:SMTP_PORT (what the worker's flows send through)."""
    with serve_smtp(port=SMTP_PORT) as server:
        yield server


@pytest.fixture(scope="module")
def content() -> Iterator[HttpSource]:
    """The sources' server: feeds, pages, and Reddit's listings at REDDIT_BASE_URL."""
    with serve_http_source(CONTENT_PORT) as source:
        yield source


def ago(hours: float) -> datetime:
    return datetime.now(UTC) - timedelta(hours=hours)


def rss(tag: str, *items: tuple[str, datetime]) -> bytes:
    entries = "".join(
        f"<item><title>{title}</title><link>https://news.example.com/{tag}/{i}</link>"
        f"<description>About {title}.</description>"
        f"<pubDate>{when.strftime('%a, %d %b %Y %H:%M:%S +0000')}</pubDate></item>"
        for i, (title, when) in enumerate(items)
    )
    return (
        f'<?xml version="1.0"?><rss version="2.0"><channel><title>{tag}</title>'
        f"<link>https://news.example.com</link><description>d</description>{entries}"
        "</channel></rss>"
    ).encode()


def atom(tag: str, title: str, when: datetime) -> bytes:
    return (
        '<?xml version="1.0" encoding="utf-8"?><feed xmlns="http://www.w3.org/2005/Atom">'
        f"<title>{tag}</title><id>urn:{tag}</id><updated>{when.isoformat()}</updated>"
        f'<entry><title>{title}</title><link href="https://blog.example.com/{tag}/1"/>'
        f"<id>urn:{tag}:1</id><updated>{when.isoformat()}</updated>"
        f"<summary>About {title}.</summary></entry></feed>"
    ).encode()


def reddit(title: str, when: datetime) -> dict[str, Any]:
    post = {
        "title": title,
        "url": f"https://papers.example.com/{uuid.uuid4().hex[:6]}",
        "permalink": "/r/MachineLearning/comments/x/y/",
        "created_utc": when.timestamp(),
        "selftext": "",
        "author": "someone",
        "stickied": False,
    }
    return {"kind": "Listing", "data": {"children": [{"kind": "t3", "data": post}]}}


def page(title: str, when: datetime) -> bytes:
    return (
        "<html><body><ul>"
        f'<li class="story"><a href="/stories/1">{title}</a>'
        f'<time datetime="{when.isoformat()}">today</time></li>'
        "</ul></body></html>"
    ).encode()


def workspace(api: TestClient, content: HttpSource, *, down: bool = False) -> tuple[str, str]:
    """A workspace with an RSS, an Atom, a Reddit and an HTML source (and one that is down),
    each at paths of its own; the workspace id and its tag."""
    tag = uuid.uuid4().hex[:8]
    ws = f"ws-{tag}"
    base = content.url
    content.route(f"/{tag}/feed.xml", Reply(200, rss(tag, (f"RSS story {tag}", ago(2))), XML))
    content.route(f"/{tag}/atom.xml", Reply(200, atom(tag, f"Atom story {tag}", ago(3)), XML))
    content.route(f"/reddit/r/ML{tag}/new.json", Reply(200, reddit(f"Reddit story {tag}", ago(1))))
    content.route(f"/{tag}/page.html", Reply(200, page(f"Page story {tag}", ago(4)), HTML))
    sources: list[dict[str, Any]] = [
        {"type": "rss", "url": f"{base}/{tag}/feed.xml"},
        {"type": "rss", "url": f"{base}/{tag}/atom.xml"},
        {"type": "reddit", "subreddit": f"ML{tag}"},
        {
            "type": "html",
            "url": f"{base}/{tag}/page.html",
            "item_selector": "li.story",
            "title_selector": "a",
            "link_selector": "a",
            "date_selector": "time",
        },
    ]
    if down:
        content.route(f"/{tag}/down.xml", Reply(503, {"error": "down"}))
        sources.append({"type": "rss", "url": f"{base}/{tag}/down.xml"})
    answer = api.put(f"/api/v1/workspaces/{ws}/sources", json={"sources": sources})
    assert answer.status_code == 200, answer.text
    return ws, tag


def subscribe(api: TestClient, ws: str, tag: str, active: int, unsubscribed: int = 0) -> list[str]:
    """Active subscribers (their addresses) and some unsubscribed ones."""
    people = [
        {"email": f"reader{i}.{tag}@example.com", "name": f"Reader {i}"} for i in range(active)
    ] + [
        {"email": f"gone{i}.{tag}@example.com", "status": "unsubscribed"}
        for i in range(unsubscribed)
    ]
    answer = api.put(f"/api/v1/workspaces/{ws}/subscribers", json={"subscribers": people})
    assert answer.status_code == 200, answer.text
    return [p["email"] for p in people[:active]]


def create_job(api: TestClient, ws: str, **config: Any) -> str:
    job = {
        "workspace_id": ws,
        "name": "Daily AI Digest",
        "schedule_type": "daily",
        "schedule_time": "08:00",
        "timezone": "America/New_York",
        "actions": ["scrape", "generate", "send"],
        "config": {"max_items": 10, "days_back": 1, **config},
    }
    answer = api.post("/api/v1/scheduler", json=job)
    assert answer.status_code == 201, answer.text
    job_id: str = answer.json()["data"]["id"]
    return job_id


def run_now(api: TestClient, job_id: str, test_mode: bool = False) -> str:
    answer = api.post(f"/api/v1/scheduler/{job_id}/run-now", json={"test_mode": test_mode})
    assert answer.status_code == 202, answer.text
    execution: str = answer.json()["data"]["execution_id"]
    return execution


def settled(api_url: str, run_id: str, quiet: float = 2.0) -> None:
    """Wait until the run's state has not changed for `quiet` seconds."""
    last, since = flow_run(api_url, run_id)["state"]["id"], time.monotonic()
    while time.monotonic() - since < quiet:
        time.sleep(0.2)
        now = flow_run(api_url, run_id)["state"]["id"]
        if now != last:
            last, since = now, time.monotonic()


def mails_to(sink: SmtpSink, address: str) -> list[EmailMessage]:
    return [m for m in list(sink.messages) if m["To"] and address in m["To"]]


def test_run_now_mails_each_active_subscriber_once_with_the_scraped_items(
    api: TestClient, worker: Any, sink: SmtpSink, content: HttpSource
):
    """One source down (the others scraped, the failure in the result), one recipient
    refused once with a 451 (one e-mail still), none to the unsubscribed; test mode sends
    none and still stores the issue; history and stats show each action's result."""
    ws, tag = workspace(api, content, down=True)
    readers = subscribe(api, ws, tag, active=3, unsubscribed=1)
    sink.refuse(readers[1], code=451, times=1)
    job_id = create_job(api, ws)

    run = wait_for_run(api, run_now(api, job_id))
    assert run["state_type"] == "COMPLETED", run
    for address in readers:
        assert sink.by_recipient[address] == 1, address
    assert sink.by_recipient[f"gone0.{tag}@example.com"] == 0
    mail = mails_to(sink, readers[0])[0]
    assert mail["Subject"].startswith("Daily AI Digest — ")
    assert mail.get_content_type() == "multipart/alternative"
    text_part, html_part = mail.get_body(("plain",)), mail.get_body(("html",))
    assert text_part is not None and html_part is not None
    text, html = text_part.get_content(), html_part.get_content()
    for kind in ("RSS", "Atom", "Reddit", "Page"):
        assert f"{kind} story {tag}" in text and f"{kind} story {tag}" in html
    assert "Reader 0" in text
    unsubscribe = mail["List-Unsubscribe"].strip("<>")
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"

    history = api.get(f"/api/v1/scheduler/{job_id}/history").json()["data"]["executions"]
    first = history[0]
    assert first["status"] == "completed"
    assert first["scrape_result"]["items_scraped"] == 4
    assert [f["source"] for f in first["scrape_result"]["failures"]] == [
        f"rss {content.url}/{tag}/down.xml"
    ]
    assert "503" in first["scrape_result"]["failures"][0]["error"]
    assert first["generate_result"]["items_used"] == 4
    assert (first["send_result"]["sent_count"], first["send_result"]["failed_count"]) == (3, 0)
    assert any("sent 3 e-mails" in line for line in first["logs"])
    assert first["duration_seconds"] > 0

    test_run = wait_for_run(api, run_now(api, job_id, test_mode=True))
    assert test_run["state_type"] == "COMPLETED", test_run
    assert sum(sink.by_recipient[a] for a in readers) == 3  # nothing more was sent
    history = api.get(f"/api/v1/scheduler/{job_id}/history", params={"limit": 50}).json()
    latest = history["data"]["executions"][0]
    assert (latest["id"], latest["test_mode"]) == (test_run["id"], True)
    assert latest["send_result"]["reason"] == "test mode: nothing sent"
    stats = api.get(f"/api/v1/scheduler/{job_id}/stats").json()["data"]
    assert (stats["total_executions"], stats["successful_executions"]) == (2, 2)
    assert stats["success_rate"] == 100.0
    assert stats["average_duration_seconds"] > 0

    issues = api.get("/api/newsletters", params={"workspace_id": ws}).json()
    assert issues["count"] == 2
    assert [i["test_mode"] for i in issues["data"]] == [True, False]
    sent_issue = api.get(f"/api/newsletters/{issues['data'][1]['id']}").json()["data"]
    assert sent_issue["delivery_counts"]["sent"] == 3
    assert len(sent_issue["items"]) == 4
    attempts = {d["email"]: d["attempts"] for d in sent_issue["deliveries"]}
    assert attempts[readers[1]] == 2 and attempts[readers[0]] == 1

    # The one-click link unsubscribes that reader from the next issues.
    path = httpx.URL(unsubscribe).path
    assert api.post(path).status_code == 200
    active = api.get(f"/api/v1/workspaces/{ws}/subscribers", params={"status": "active"})
    assert readers[0] not in [s["email"] for s in active.json()["data"]]


def test_a_permanent_refusal_is_recorded_with_the_servers_answer(
    api: TestClient, worker: Any, sink: SmtpSink, content: HttpSource
):
    ws, tag = workspace(api, content)
    readers = subscribe(api, ws, tag, active=2)
    sink.refuse(readers[0], code=550, times=None, message="5.1.1 mailbox unavailable")
    run = wait_for_run(api, run_now(api, create_job(api, ws)))
    assert run["state_type"] == "COMPLETED", run
    assert (sink.by_recipient[readers[0]], sink.by_recipient[readers[1]]) == (0, 1)
    issue = api.get("/api/newsletters", params={"workspace_id": ws}).json()["data"][0]
    deliveries = api.get(f"/api/newsletters/{issue['id']}").json()["data"]["deliveries"]
    refused = next(d for d in deliveries if d["email"] == readers[0])
    assert (refused["status"], refused["smtp_code"]) == ("failed", 550)
    assert "mailbox unavailable" in refused["error"]


def test_nothing_scraped_sends_nothing_and_says_why(
    api: TestClient, worker: Any, sink: SmtpSink, content: HttpSource
):
    tag = uuid.uuid4().hex[:8]
    ws = f"ws-{tag}"
    content.route(f"/{tag}/old.xml", Reply(200, rss(tag, ("Old news", ago(24 * 5))), XML))
    api.put(
        f"/api/v1/workspaces/{ws}/sources",
        json={"sources": [{"type": "rss", "url": f"{content.url}/{tag}/old.xml"}]},
    )
    readers = subscribe(api, ws, tag, active=2)
    job_id = create_job(api, ws)
    run = wait_for_run(api, run_now(api, job_id))
    assert run["state_type"] == "COMPLETED", run
    execution = api.get(f"/api/v1/scheduler/{job_id}/history").json()["data"]["executions"][0]
    assert execution["scrape_result"]["items_scraped"] == 0
    assert "no items newer than 1 day" in execution["generate_result"]["reason"]
    assert execution["send_result"]["skipped"] is True

    # Every source down: the run fails, with the reason.
    content.route(f"/{tag}/old.xml", Reply(500, {"error": "boom"}))
    run = wait_for_run(api, run_now(api, job_id))
    assert run["state_type"] == "FAILED", run
    execution = api.get(f"/api/v1/scheduler/{job_id}/history").json()["data"]["executions"][0]
    assert execution["status"] == "failed"
    assert "every source failed" in execution["error_message"]
    assert sum(sink.by_recipient[a] for a in readers) == 0


def test_a_run_killed_mid_send_and_retried_mails_no_one_twice(
    api: TestClient, worker: Any, sink: SmtpSink, content: HttpSource, prefect_api_url: str
):
    """The flow's process is SIGKILLed while the server holds its messages; the run, set to
    run again, reuses its issue and sends only what no attempt had in hand."""
    ws, tag = workspace(api, content)
    readers = subscribe(api, ws, tag, active=120)
    job_id = create_job(api, ws)
    sink.hold_data(0.15)
    try:
        run_id = run_now(api, job_id)
        wait_until(lambda: sum(sink.by_recipient[a] for a in readers) >= 8, "8 e-mails", 60, 0.02)
        running = flow_run(prefect_api_url, run_id)
        pid = int(str(running["infrastructure_pid"]).split(":")[-1])
        os.kill(pid, signal.SIGKILL)
        crashed = wait_until(
            lambda: (
                (r := flow_run(prefect_api_url, run_id))["state_type"] in ("CRASHED", "FAILED")
                and r
            ),
            "the run crashing",
            60,
        )
        assert crashed["state_type"] == "CRASHED", crashed
    finally:
        sink.hold_data(0)
    # The worker's zygote and the worker each report the crash: retry once both have.
    settled(prefect_api_url, run_id)
    again = httpx.post(
        f"{prefect_api_url}/flow_runs/{run_id}/set_state",
        json={"state": {"type": "SCHEDULED", "name": "AwaitingRetry"}, "force": True},
        timeout=30,
    )
    assert again.json()["status"] == "ACCEPT", again.text
    wait_until(
        lambda: flow_run(prefect_api_url, run_id)["state_type"] != "SCHEDULED",
        "the run starting again",
        60,
    )
    run = wait_for_run(api, run_id)
    assert run["state_type"] == "COMPLETED", run

    counts = [sink.by_recipient[a] for a in readers]
    assert max(counts) == 1  # no one twice
    mailed = {a for a, n in zip(readers, counts, strict=True) if n}
    issues = api.get("/api/newsletters", params={"workspace_id": ws}).json()
    assert issues["count"] == 1  # the retry reused the issue
    ledger = api.get(f"/api/newsletters/{issues['data'][0]['id']}").json()["data"]
    sent = {d["email"] for d in ledger["deliveries"] if d["status"] == "sent"}
    unconfirmed = {d["email"] for d in ledger["deliveries"] if d["status"] == "failed"}
    assert all("unconfirmed" in d["error"] for d in ledger["deliveries"] if d["error"])
    assert len(sent) + len(unconfirmed) == 120
    assert sent <= mailed
    # Only what was in flight at the kill reached the server unconfirmed (one a connection),
    # and no more rows are unconfirmed than the sender held.
    settings = get_settings()
    assert len(mailed - sent) <= settings.smtp_connections
    assert mailed - sent <= unconfirmed
    assert len(unconfirmed) <= most_unconfirmed(settings.smtp_connections)
    execution = api.get(f"/api/v1/scheduler/{job_id}/history").json()["data"]["executions"][0]
    assert execution["send_result"]["unconfirmed"] == len(unconfirmed)


def test_blocks_write_the_copy_and_carry_the_mail_under_a_rate_limit(
    api: TestClient, worker: Any, sink: SmtpSink, content: HttpSource, prefect_api_url: str
):
    """A ChatModel block (a local OpenAI-compatible fake) writes the intro and a summary in
    the job's tone, an SmtpServer block names the server, and a Prefect rate limit paces it."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.utilities.asyncutils import run_coro_as_sync

    from blocks.chat_model import ChatModel
    from blocks.smtp import SmtpServer

    ws, tag = workspace(api, content)
    readers = subscribe(api, ws, tag, active=12)
    copy = {"intro": f"Crisp intro {tag}", "summaries": [{"url": "x", "summary": "ignored"}]}
    content.route(
        f"/llm{tag}/v1/chat/completions",
        Reply(200, {"choices": [{"message": {"role": "assistant", "content": json.dumps(copy)}}]}),
    )
    ChatModel(base_url=f"{content.url}/llm{tag}/v1", model="tiny").save(f"llm-{tag}")
    SmtpServer(
        host="127.0.0.1", port=SMTP_PORT, from_address="Blocks <b@example.com>", security="none"
    ).save(f"smtp-{tag}")

    async def limit() -> None:
        async with get_client() as client:
            await client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(
                    name=f"mail-{tag}", limit=100, slot_decay_per_second=100
                )
            )

    run_coro_as_sync(limit())
    job_id = create_job(
        api,
        ws,
        tone="professional",
        chat_model=f"llm-{tag}",
        smtp_server=f"smtp-{tag}",
        rate_limit=f"mail-{tag}",
    )
    run = wait_for_run(api, run_now(api, job_id))
    assert run["state_type"] == "COMPLETED", run
    assert all(sink.by_recipient[a] == 1 for a in readers)
    mail = mails_to(sink, readers[0])[0]
    assert "b@example.com" in mail["From"]
    body = mail.get_body(("plain",))
    assert body is not None and f"Crisp intro {tag}" in body.get_content()
    asked = [r for r in content.requests if r["path"] == f"/llm{tag}/v1/chat/completions"]
    assert len(asked) == 1  # one call for the whole issue
    assert "professional" in asked[0]["body"].decode()
    execution = api.get(f"/api/v1/scheduler/{job_id}/history").json()["data"]["executions"][0]
    assert execution["generate_result"]["ai"] is True
