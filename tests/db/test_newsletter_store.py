"""The newsletter's tables on SQLite and PostgreSQL: sources, subscribers, issues, the ledger."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session

from db.newsletter import (
    Mark,
    Recipient,
    active_recipients,
    claim_deliveries,
    delivery_counts,
    list_sources,
    list_subscribers,
    mark_deliveries,
    queue_deliveries,
    release_claim,
    replace_sources,
    save_newsletter,
    settle_unconfirmed,
    unsent_deliveries,
    unsubscribe,
    upsert_subscribers,
)


def _issue(conn, run_id: uuid.UUID | None = None) -> int:
    row = {
        "flow_run_id": run_id or uuid.uuid4(),
        "job_id": None,
        "job_name": "Daily AI Digest",
        "workspace_id": "ws-1",
        "subject": "Daily AI Digest — 3 December 2026",
        "html": "<p>hi</p>",
        "text": "hi",
        "test_mode": False,
    }
    item = {
        "title": "A",
        "url": "https://example.test/a",
        "source": "rss",
        "source_label": "rss https://example.test/feed",
        "published_at": datetime(2026, 12, 3, tzinfo=UTC),
        "summary": "",
        "author": None,
    }
    return save_newsletter(conn, row, [item])


def test_sources_are_replaced_as_a_list_in_order(any_engine: Engine):
    with any_engine.begin() as conn:
        replace_sources(conn, "ws-1", [{"type": "rss", "url": "https://a.test/feed"}])
        replace_sources(
            conn,
            "ws-1",
            [{"type": "reddit", "subreddit": "python"}, {"type": "rss", "url": "https://b.test"}],
        )
        replace_sources(conn, "ws-2", [{"type": "rss", "url": "https://c.test"}])
    with Session(any_engine) as session:
        assert [s["type"] for s in list_sources(session, "ws-1")] == ["reddit", "rss"]
        assert len(list_sources(session, "ws-2")) == 1


def test_subscribers_upsert_by_lowercased_address_per_workspace(any_engine: Engine):
    with any_engine.begin() as conn:
        upsert_subscribers(conn, "ws-1", [{"email": "Ann@Example.test", "name": "Ann"}])
        upsert_subscribers(
            conn,
            "ws-1",
            [
                {"email": "ann@example.test", "name": "Ann B", "status": "unsubscribed"},
                {"email": "bob@example.test"},
            ],
        )
        upsert_subscribers(conn, "ws-2", [{"email": "ann@example.test"}])
    with Session(any_engine) as session:
        rows, total = list_subscribers(session, "ws-1")
        assert total == 2
        assert [(r.email, r.name, r.status) for r in rows] == [
            ("ann@example.test", "Ann B", "unsubscribed"),
            ("bob@example.test", None, "active"),
        ]
    with any_engine.connect() as conn:
        assert [r.email for r in active_recipients(conn, "ws-1")] == ["bob@example.test"]


def test_an_issue_is_saved_once_per_flow_run(any_engine: Engine):
    run_id = uuid.uuid4()
    with any_engine.begin() as conn:
        first = _issue(conn, run_id)
        again = _issue(conn, run_id)
    assert first == again


def test_the_ledger_sends_each_address_once_across_attempts(any_engine: Engine):
    """A retry queues only newcomers and sends what is queued; a row an attempt that died
    left claimed is settled as unconfirmed, never sent again; a row marked sent stays."""
    recipients = [Recipient(f"r{i}@example.test") for i in range(6)]
    with any_engine.begin() as conn:
        issue = _issue(conn)
        assert queue_deliveries(conn, issue, recipients) == 6
        rows = unsent_deliveries(conn, issue)
        first = claim_deliveries(conn, "attempt-1", [r.id for r in rows[:4]])
    assert len(first) == 4
    now = datetime.now(UTC)
    with any_engine.begin() as conn:
        # Attempt 1 confirms two, one refused for good, then dies with the fourth in flight.
        mark_deliveries(
            conn,
            "attempt-1",
            [
                Mark(rows[0].id, "sent", 250, "OK", 1, now),
                Mark(rows[1].id, "sent", 250, "OK", 1, now),
                Mark(rows[2].id, "failed", 550, "5.1.1 no such user", 1, now),
            ],
        )
    with any_engine.begin() as conn:
        assert settle_unconfirmed(conn, issue) == 1
        assert queue_deliveries(conn, issue, [*recipients, Recipient("new@example.test")]) == 7
        second = unsent_deliveries(conn, issue)
        assert sorted(r.email for r in second) == [
            "new@example.test",
            "r4@example.test",
            "r5@example.test",
        ]
        assert claim_deliveries(conn, "attempt-2", [r.id for r in second]) == {r.id for r in second}
        # A row already claimed is not claimed again; a late mark of attempt 1 changes nothing.
        assert claim_deliveries(conn, "attempt-3", [second[0].id]) == set()
        mark_deliveries(conn, "attempt-1", [Mark(rows[3].id, "sent", 250, "OK", 1, now)])
        mark_deliveries(conn, "attempt-2", [Mark(r.id, "sent", 250, "OK", 1, now) for r in second])
        assert delivery_counts(conn, issue) == {"queued": 0, "sending": 0, "sent": 5, "failed": 2}
        assert unsent_deliveries(conn, issue) == []


def test_a_claim_the_sender_never_used_is_released(any_engine: Engine):
    with any_engine.begin() as conn:
        issue = _issue(conn)
        queue_deliveries(conn, issue, [Recipient("a@example.test"), Recipient("b@example.test")])
        rows = unsent_deliveries(conn, issue)
        claim_deliveries(conn, "attempt-1", [r.id for r in rows])
        assert release_claim(conn, "attempt-1") == 2
        assert len(unsent_deliveries(conn, issue)) == 2


def test_an_unsubscribe_token_unsubscribes_its_subscriber_only(any_engine: Engine):
    with any_engine.begin() as conn:
        upsert_subscribers(conn, "ws-1", [{"email": "a@x.test"}, {"email": "b@x.test"}])
        issue = _issue(conn)
        queue_deliveries(conn, issue, active_recipients(conn, "ws-1"))
        token = next(c.token for c in unsent_deliveries(conn, issue) if c.email == "a@x.test")
        assert token
        assert unsubscribe(conn, token)
        assert not unsubscribe(conn, "0" * 32)
        assert [r.email for r in active_recipients(conn, "ws-1")] == ["b@x.test"]


def test_a_bulk_upsert_keeps_each_subscribers_token_and_creation_time(any_engine: Engine):
    """Past 1,000 rows PostgreSQL upserts go through COPY: the same columns are updated."""
    people = [{"email": f"r{i}@example.test", "name": f"R{i}"} for i in range(1500)]
    with any_engine.begin() as conn:
        upsert_subscribers(conn, "ws-1", people)
    with Session(any_engine) as session:
        before = {
            s.email: (s.token, s.created_at)
            for s in list_subscribers(session, "ws-1", limit=2000)[0]
        }
    renamed = [{**p, "name": "renamed", "status": "unsubscribed"} for p in people]
    with any_engine.begin() as conn:
        upsert_subscribers(conn, "ws-1", renamed)
    with Session(any_engine) as session:
        rows, total = list_subscribers(session, "ws-1", limit=2000)
    assert total == 1500
    assert {s.email: (s.token, s.created_at) for s in rows} == before
    assert {(s.name, s.status) for s in rows} == {("renamed", "unsubscribed")}
