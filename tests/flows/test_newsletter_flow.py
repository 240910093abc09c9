"""The newsletter flow's pure steps: which of a workspace's sources a job scrapes."""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy.engine import Engine

from db.newsletter import replace_sources
from flows.common import ReportedFailure
from flows.newsletter import NothingToSend, workspace_sources


def workspace(engine: Engine, sources: list[dict[str, object]]) -> str:
    ws = f"ws-{uuid.uuid4().hex[:8]}"
    with engine.begin() as conn:
        replace_sources(conn, ws, sources)
    return ws


def test_a_jobs_source_types_pick_the_workspaces_sources_and_none_means_all(
    sqlite_engine: Engine,
):
    ws = workspace(
        sqlite_engine,
        [
            {"type": "rss", "url": "https://a.example.com/feed.xml"},
            {"type": "reddit", "subreddit": "MachineLearning"},
            {"type": "rss", "url": "https://b.example.com/atom.xml"},
        ],
    )
    assert [s.type for s in workspace_sources(sqlite_engine, ws, None)] == ["rss", "reddit", "rss"]
    assert [s.label for s in workspace_sources(sqlite_engine, ws, ["reddit"])] == [
        "reddit r/MachineLearning"
    ]
    with pytest.raises(NothingToSend, match="has no sources of type html"):
        workspace_sources(sqlite_engine, ws, ["html"])


def test_a_workspace_without_sources_or_with_an_invalid_one_fails_the_run_with_why(
    sqlite_engine: Engine,
):
    with pytest.raises(NothingToSend, match=r"has no sources$"):
        workspace_sources(sqlite_engine, workspace(sqlite_engine, []), None)
    broken = workspace(sqlite_engine, [{"type": "rss", "url": "ftp://old.example.com"}])
    with pytest.raises(ReportedFailure, match="workspace sources are invalid"):
        workspace_sources(sqlite_engine, broken, None)
