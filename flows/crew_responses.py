"""crew pipeline (seed 000): users → crew API → crew_responses, in batches, losing no user.

Few Prefect tasks over batches: per page of users one `load_users`, per batch one `call_crew`
(all of the batch's calls, bounded by one semaphore shared by every batch) and one
`store_responses` (one set-based upsert). Batches overlap: while a batch is stored, later
batches' calls go on, and the next page loads while the current one is called.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, cast

import anyio
import httpx
import sqlalchemy as sa
from prefect import flow, get_client, task
from prefect.artifacts import acreate_progress_artifact, aupdate_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import PrefectClient
from prefect.concurrency.asyncio import rate_limit
from sqlalchemy.engine import Engine

from db.crew import (
    count_eligible_users,
    load_user_page,
    succeeded_uids,
    upsert_crew_responses,
    user_source_table,
    users_table,
)
from db.engine import get_engine
from db.models import RunOutcomeBase, utcnow
from flows.common import (
    artifact_key,
    current_flow_run_id,
    current_schedule_name,
    is_first_attempt,
    publish_table,
    record_outcome,
    unwalked,
)
from flows.crew_calls import CrewCaller, CrewResult, CrewUser, crew_transport
from flows.crew_params import (
    BACKOFF_SECONDS,
    BATCH_SIZE,
    CONCURRENCY,
    PAGE_SIZE,
    RETRIES,
    TIMEOUT_SECONDS,
    Backoff,
    BatchSize,
    BlockName,
    Concurrency,
    PageSize,
    PerSecond,
    Retries,
    Timeout,
)
from flows.http import describe_error
from settings import get_settings

FAILURES_SHOWN = 20


@dataclass(frozen=True)
class UserTable:
    """Where users are read from: our `users` table or a UserSource block's table."""

    engine: Engine
    table: sa.Table


@dataclass(frozen=True)
class UserPage:
    users: list[CrewUser]
    last_uid: str | None  # where the next page starts; None: this is the last page
    already_stored: int = 0


@dataclass(frozen=True)
class CrewEndpoint:
    url: str
    headers: dict[str, str] = field(default_factory=dict)

    @property
    def host(self) -> str:
        return httpx.URL(self.url).netloc.decode()


def response_rows(
    results: Sequence[CrewResult], flow_run_id: uuid.UUID, now: datetime
) -> list[dict[str, Any]]:
    """crew_responses rows: the seed's request and response, plus the run, status and error."""
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


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
async def load_users(
    source: UserTable,
    after: str | None,
    limit: int,
    engine: Engine,
    flow_run_id: uuid.UUID,
    retrying: bool,
) -> UserPage:
    """The next page of users with a context or goal, minus those this run already stored."""

    def read() -> UserPage:
        with source.engine.connect() as conn:
            # One row more than the page says whether another page follows, without a query.
            rows = load_user_page(conn, source.table, after, limit + 1)
        more, rows = len(rows) > limit, rows[:limit]
        done: set[str] = set()
        if retrying:  # a first attempt has stored nothing yet
            with engine.connect() as conn:
                done = succeeded_uids(conn, flow_run_id, (uid for uid, _, _ in rows))
        users = [CrewUser(uid, context, goal) for uid, context, goal in rows if uid not in done]
        return UserPage(users, rows[-1][0] if more else None, len(done))

    return await anyio.to_thread.run_sync(read)


@task(cache_policy=NO_CACHE)
async def call_crew(caller: CrewCaller, users: list[CrewUser]) -> list[CrewResult]:
    """Send a batch of users to the crew API; every user comes back, answered or with its error.

    No task retries: each call retries itself, and a task retry would call the whole batch again.
    """
    return await caller.call_all(users)


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
async def store_responses(engine: Engine, results: list[CrewResult], flow_run_id: uuid.UUID) -> int:
    """Upsert a batch into crew_responses in one transaction (a retry replaces, never adds)."""
    rows = response_rows(results, flow_run_id, utcnow())

    def write() -> int:
        with engine.begin() as conn:
            return upsert_crew_responses(conn, rows)

    return await anyio.to_thread.run_sync(write)


async def crew_endpoint(block_name: str | None) -> CrewEndpoint:
    """The crew API of a CrewApi block, else the CREW_API_URL setting."""
    if block_name is not None:
        from blocks.crew import CrewApi

        block = cast(CrewApi, await CrewApi.aload(block_name))
        return CrewEndpoint(block.url, block.headers())
    url = get_settings().crew_api_url
    if not url:
        raise ValueError("no crew API: name a CrewApi block in crew_api or set CREW_API_URL")
    return CrewEndpoint(url)


async def user_table(block_name: str | None) -> UserTable:
    """Our users table, or the table a UserSource block names (checked for its columns)."""
    if block_name is None:
        return UserTable(get_engine(), users_table())
    from blocks.crew import UserSource

    block = cast(UserSource, await UserSource.aload(block_name))
    engine = block.engine()

    def reflect() -> sa.Table:
        with engine.connect() as conn:
            return user_source_table(conn, block.table)

    return UserTable(engine, await anyio.to_thread.run_sync(reflect))


async def host_rate_limit(host: str, per_second: float) -> str:
    """Create or adjust the host's Prefect rate limit (a global concurrency limit with decay)."""
    name = rate_limit_name(host)
    async with get_client() as client:
        await client.upsert_global_concurrency_limit_by_name(
            name, limit=max(1, int(per_second)), slot_decay_per_second=per_second
        )
    return name


class Progress:
    """The run's progress artifact (percent of eligible users handled).

    Batches finish concurrently: updates go one at a time, newest value first, so the
    artifact never steps back.
    """

    def __init__(
        self, client: PrefectClient, artifact: asyncio.Future[uuid.UUID], total: int
    ) -> None:
        # The artifact is created while the first users load: the calls don't wait for it.
        self.client, self.artifact, self.total = client, artifact, total
        self.done, self.shown = 0, 0.0
        self.lock = asyncio.Lock()

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
    succeeded: int = 0
    failed: int = 0
    already_stored: int = 0
    failures: list[dict[str, Any]] = field(default_factory=list)

    def add(self, results: Sequence[CrewResult]) -> None:
        for r in results:
            if r.succeeded:
                self.succeeded += 1
            else:
                self.failed += 1
                if len(self.failures) < FAILURES_SHOWN:
                    self.failures.append({"user_uid": r.user.uid, "error": r.error})


@flow(name="crew-responses")
async def crew_responses(
    crew_api: BlockName | None = None,
    users: BlockName | None = None,
    concurrency: Concurrency = CONCURRENCY,
    page_size: PageSize = PAGE_SIZE,
    batch_size: BatchSize = BATCH_SIZE,
    retries: Retries = RETRIES,
    backoff_seconds: Backoff = BACKOFF_SECONDS,
    timeout_seconds: Timeout = TIMEOUT_SECONDS,
    requests_per_second: PerSecond = None,
) -> dict[str, int]:
    """Send every user with a context or goal to the crew API and store each answer or error."""
    schedule, run_id = current_schedule_name(), current_flow_run_id()
    engine = get_engine()
    outcome = RunOutcomeBase(
        flow_run_id=run_id, schedule=schedule, pipeline="crew", started_at=utcnow()
    )
    tally = Tally()
    started = time.perf_counter()
    try:
        endpoint = await crew_endpoint(crew_api)
        source = await user_table(users)
        before_call = None
        if requests_per_second is not None:
            limit_name = await host_rate_limit(endpoint.host, requests_per_second)

            async def before_call() -> None:
                await rate_limit(limit_name, strict=True)

        total = await anyio.to_thread.run_sync(_count, source)
        async with get_client() as prefect, crew_transport(concurrency) as transport:
            artifact = asyncio.ensure_future(
                acreate_progress_artifact(
                    0.0,
                    key=artifact_key("crew-progress", schedule),
                    description=f"{total} users to send to {endpoint.host}",
                )
            )
            progress = Progress(prefect, artifact, total)
            caller = CrewCaller(
                transport,
                endpoint.url,
                concurrency=concurrency,
                retries=retries,
                backoff_seconds=backoff_seconds,
                timeout_seconds=timeout_seconds,
                headers=endpoint.headers,
                before_call=before_call,
            )

            async def process(batch: list[CrewUser]) -> None:
                results = await call_crew(unwalked(caller), unwalked(batch))
                # The artifact's update need not wait for the store (a failed store fails the
                # run, whatever the artifact says).
                await asyncio.gather(
                    store_responses(engine, unwalked(results), run_id),
                    progress.advance(len(batch)),
                )
                tally.add(results)

            try:
                await _run_pages(source, engine, run_id, page_size, batch_size, process, tally)
            finally:
                await artifact  # created even for a run with no user
    except Exception as exc:
        outcome.error = describe_error(exc)
        raise
    finally:
        outcome.items_succeeded, outcome.items_failed = tally.succeeded, tally.failed
        outcome.items_processed = tally.succeeded + tally.failed
        outcome.meta = {
            "already_stored": tally.already_stored,
            "seconds": round(time.perf_counter() - started, 3),
            "failures": tally.failures,
        }
        outcome.finished_at = utcnow()
        record_outcome(engine, outcome)
    await _summarise(schedule, outcome, tally)
    if tally.failed and not tally.succeeded:
        raise RuntimeError(f"all {tally.failed} crew API calls failed; first: {tally.failures[0]}")
    return {"succeeded": tally.succeeded, "failed": tally.failed}


def _count(source: UserTable) -> int:
    with source.engine.connect() as conn:
        return count_eligible_users(conn, source.table)


async def _run_pages(
    source: UserTable,
    engine: Engine,
    run_id: uuid.UUID,
    page_size: int,
    batch_size: int,
    process: Callable[[list[CrewUser]], Awaitable[None]],
    tally: Tally,
) -> None:
    """Load pages (the next while this one is called) and process their batches concurrently."""
    max_pending = max(2, 2 * page_size // batch_size)
    pending: set[asyncio.Future[None]] = set()

    retrying = not is_first_attempt()

    def load(after: str | None) -> asyncio.Future[UserPage]:
        return asyncio.ensure_future(
            load_users(unwalked(source), after, page_size, engine, run_id, retrying)
        )

    next_page = load(None)
    try:
        while True:
            page = await next_page
            # Users a failed attempt of this run already stored count as succeeded.
            tally.already_stored += page.already_stored
            tally.succeeded += page.already_stored
            if page.last_uid is not None:
                next_page = load(page.last_uid)
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


async def _summarise(schedule: str, outcome: RunOutcomeBase, tally: Tally) -> None:
    rows: list[dict[str, Any]] = [
        {"status": "succeeded", "users": tally.succeeded, "user_uid": "", "error": ""},
        {"status": "failed", "users": tally.failed, "user_uid": "", "error": ""},
        {"status": "already stored", "users": tally.already_stored, "user_uid": "", "error": ""},
    ]
    rows += [{"status": "failed", "users": 1, **f} for f in tally.failures]
    await publish_table(
        artifact_key("crew", schedule),
        rows,
        f"{outcome.items_processed} users handled in {outcome.meta['seconds']} s: "
        f"{tally.succeeded} succeeded, {tally.failed} failed (first {FAILURES_SHOWN} shown), "
        f"{tally.already_stored} already stored by an earlier attempt of this run.",
    )
