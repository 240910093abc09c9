"""How the crew flow works through its users: pages, batches, progress and the tally.

Plain async code around the flow's three tasks (load_users, call_crew, store_responses):
pages load one ahead, each page's batches run concurrently up to a bound, the progress
artifact only moves forward, and the tally counts every user, answered or failed.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from types import TracebackType
from typing import Any

from prefect import get_client
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.client.orchestration import PrefectClient
from prefect.concurrency.asyncio import rate_limit

from db.models import RunOutcomeBase
from flows.crew_calls import CrewResult, CrewUser

FAILURES_SHOWN = 20


@dataclass(frozen=True)
class UserPage:
    """One page of users to call; `last_uid` is where the next page starts (None: last page)."""

    users: list[CrewUser]
    last_uid: str | None
    already_stored: int = 0


def response_rows(
    results: Sequence[CrewResult], flow_run_id: uuid.UUID, now: datetime
) -> list[dict[str, Any]]:
    """crew_responses rows: the crew API's request and response, plus the run, status, error."""
    return [
        {
            "user_uid": r.user.uid,
            "request_context": r.user.context,
            "request_goal": r.user.goal,
            "response_data": r.response,
            "created_at": now,
            "flow_run_id": flow_run_id,
            "status": "succeeded" if r.succeeded else "failed",
            "error": r.error,
        }
        for r in results
    ]


def rate_limit_name(host: str) -> str:
    """One Prefect rate limit per crew API host, shared by every run that calls it."""
    return "crew-api-" + re.sub(r"[^a-z0-9]+", "-", host.lower()).strip("-")


async def host_rate_limiter(
    host: str, per_second: float | None
) -> Callable[[], Awaitable[None]] | None:
    """A wait before each call that keeps every run's calls to `host` under `per_second`.

    Prefect's rate limit (a global concurrency limit whose slots decay), created or adjusted
    here; None when no rate is asked for.
    """
    if per_second is None:
        return None
    name = rate_limit_name(host)
    async with get_client() as client:
        await client.upsert_global_concurrency_limit_by_name(
            name, limit=max(1, int(per_second)), slot_decay_per_second=per_second
        )

    async def wait_for_slot() -> None:
        await rate_limit(name, strict=True)

    return wait_for_slot


class Progress:
    """The run's progress artifact (percent of eligible users handled).

    Created in the background when the run starts (the calls don't wait for it) and awaited
    on leaving. Batches finish concurrently: updates go one at a time, newest value first, so
    the artifact never steps back.
    """

    def __init__(self, client: PrefectClient, total: int, key: str, description: str) -> None:
        self.client, self.total = client, total
        self.key, self.description = key, description
        self.done, self.shown = 0, 0.0
        self.lock = asyncio.Lock()

    async def __aenter__(self) -> Progress:
        self.artifact = asyncio.ensure_future(
            acreate_progress_artifact(0.0, key=self.key, description=self.description)
        )
        return self

    async def __aexit__(
        self,
        _type: type[BaseException] | None,
        _exc: BaseException | None,
        _tb: TracebackType | None,
    ) -> None:
        await self.artifact  # created even for a run with no user

    async def advance(self, users: int) -> None:
        self.done += users
        async with self.lock:
            percent = min(100.0 * self.done / self.total if self.total else 100.0, 100.0)
            if percent <= self.shown:
                return
            self.shown = percent
            # One client for the run: a new one per update costs ~50 ms of CPU (TLS setup).
            await aupdate_progress_artifact(await self.artifact, percent, client=self.client)


@dataclass
class Tally:
    """What the run did so far: users answered, failed, and stored by an earlier attempt."""

    succeeded: int = 0
    failed: int = 0
    already_stored: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)
    started: float = field(default_factory=time.perf_counter)
    seconds: float = 0.0

    def add(self, results: Sequence[CrewResult]) -> None:
        for r in results:
            if r.succeeded:
                self.succeeded += 1
            else:
                self.failed += 1
                if len(self.failures) < FAILURES_SHOWN:
                    self.failures.append({"user_uid": r.user.uid, "error": r.error})

    def add_already_stored(self, users: int) -> None:
        """Users a failed attempt of this run already stored count as succeeded."""
        self.already_stored += users
        self.succeeded += users

    def fill(self, outcome: RunOutcomeBase) -> None:
        """Write the counts into the run's outcome."""
        outcome.items_succeeded, outcome.items_failed = self.succeeded, self.failed
        outcome.items_processed = self.succeeded + self.failed
        self.seconds = round(time.perf_counter() - self.started, 3)
        outcome.meta = {
            "already_stored": self.already_stored,
            "seconds": self.seconds,
            "failures": self.failures,
        }

    def summary(self) -> tuple[list[dict[str, Any]], str]:
        """The summary table's rows and description (after `fill`)."""
        rows: list[dict[str, Any]] = [
            {"status": "succeeded", "users": self.succeeded, "user_uid": "", "error": ""},
            {"status": "failed", "users": self.failed, "user_uid": "", "error": ""},
            {"status": "already stored", "users": self.already_stored, "user_uid": "", "error": ""},
        ]
        rows += [{"status": "failed", "users": 1, **f} for f in self.failures]
        description = (
            f"{self.succeeded + self.failed} users handled in {self.seconds} s: "
            f"{self.succeeded} succeeded, {self.failed} failed (first {FAILURES_SHOWN} shown), "
            f"{self.already_stored} already stored by an earlier attempt of this run."
        )
        return rows, description


async def run_pages(
    load: Callable[[str | None], Awaitable[UserPage]],
    process: Callable[[list[CrewUser]], Awaitable[None]],
    batch_size: int,
    max_pending: int,
) -> None:
    """Load pages (the next while this one is called) and process their batches concurrently,
    at most `max_pending` batches at a time; the first failure cancels the rest."""
    pending: set[asyncio.Future[None]] = set()
    next_page = asyncio.ensure_future(load(None))
    try:
        while True:
            page = await next_page
            if page.last_uid is not None:
                next_page = asyncio.ensure_future(load(page.last_uid))
            for start in range(0, len(page.users), batch_size):
                pending.add(asyncio.ensure_future(process(page.users[start : start + batch_size])))
            while len(pending) > max_pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for future in done:
                    future.result()
            if page.last_uid is None:
                break
        await asyncio.gather(*pending)
        pending.clear()
    finally:
        next_page.cancel()
        for batch in pending:
            batch.cancel()
