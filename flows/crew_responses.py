"""The crew pipeline: users → crew API → crew_responses, in batches, losing no user.

Few Prefect tasks over batches: per page of users one `load_users`, per batch one `call_crew`
(all of the batch's calls, bounded by one semaphore shared by every batch) and one
`store_responses` (one set-based upsert). Batches overlap: while a batch is stored, later
batches' calls go on, and the next page loads while the current one is called
(flows/crew_batches.py).
"""

from __future__ import annotations

import asyncio
import time
import uuid

import anyio
from prefect import flow, get_client, task
from prefect.cache_policies import NO_CACHE
from sqlalchemy.engine import Engine

from blocks.crew import resolve_crew_api, resolve_user_table
from db.crew import (
    UserTable,
    count_eligible_users,
    load_user_page,
    succeeded_uids,
    upsert_crew_responses,
)
from db.engine import get_engine
from db.models import utcnow
from flows.common import (
    artifact_key,
    is_first_attempt,
    publish_table,
    recorded_run,
    storage_errors,
    unwalked,
)
from flows.crew_batches import (
    Progress,
    Tally,
    UserPage,
    host_rate_limiter,
    response_rows,
    run_pages,
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
from flows.narration import count, run_logger, shown_url
from flows.run_controls import flow_options


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

    page = await anyio.to_thread.run_sync(read)
    run_logger().info(
        "loaded %s from `%s`%s%s",
        count(len(page.users), "user"),
        source.table.name,
        f" after {after!r}" if after else "",
        f" ({page.already_stored:,} already stored by an earlier attempt)"
        if page.already_stored
        else "",
    )
    return page


@task(cache_policy=NO_CACHE)
async def call_crew(caller: CrewCaller, users: list[CrewUser]) -> list[CrewResult]:
    """Send a batch of users to the crew API; every user comes back, answered or with its error.

    No task retries: each call retries itself, and a task retry would call the whole batch again.
    """
    started = time.perf_counter()
    results = await caller.call_all(users)
    failed = [r for r in results if not r.succeeded]
    run_logger().info(
        "sent %s to %s in %.1f s: %s answered, %s failed%s",
        count(len(users), "user"),
        shown_url(caller.url),
        time.perf_counter() - started,
        f"{len(results) - len(failed):,}",
        f"{len(failed):,}",
        f" (first: {failed[0].user.uid}: {failed[0].error})" if failed else "",
    )
    return results


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
async def store_responses(engine: Engine, results: list[CrewResult], flow_run_id: uuid.UUID) -> int:
    """Upsert a batch into crew_responses in one transaction (a retry replaces, never adds)."""
    rows = response_rows(results, flow_run_id, utcnow())

    def write() -> int:
        with storage_errors(), engine.begin() as conn:
            return upsert_crew_responses(conn, rows)

    stored = await anyio.to_thread.run_sync(write)
    run_logger().info("stored %s in `crew_responses`", count(stored, "response"))
    return stored


@flow(name="crew-responses", **flow_options())
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
    engine, tally = get_engine(), Tally()
    with recorded_run(engine, "crew", finish=tally.fill) as outcome:
        endpoint = await resolve_crew_api(crew_api)
        source = await resolve_user_table(users)
        before_call = await host_rate_limiter(endpoint.host, requests_per_second)
        total = await anyio.to_thread.run_sync(count_users, source)
        retrying = not is_first_attempt()
        async with (
            get_client() as prefect,
            crew_transport(concurrency) as transport,
            Progress(
                prefect,
                total,
                key=artifact_key("crew-progress", outcome.schedule),
                description=f"{total} users to send to {endpoint.host}",
            ) as progress,
        ):
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

            async def load(after: str | None) -> UserPage:
                page = await load_users(
                    unwalked(source), after, page_size, engine, outcome.flow_run_id, retrying
                )
                tally.add_already_stored(page.already_stored)
                return page

            async def process(batch: list[CrewUser]) -> None:
                results = await call_crew(unwalked(caller), unwalked(batch))
                # The artifact's update need not wait for the store (a failed store fails
                # the run, whatever the artifact says).
                await asyncio.gather(
                    store_responses(engine, unwalked(results), outcome.flow_run_id),
                    progress.advance(len(batch)),
                )
                tally.add(results)

            await run_pages(load, process, batch_size, max(2, 2 * page_size // batch_size))
    await publish_table(artifact_key("crew", outcome.schedule), *tally.summary())
    if tally.failed and not tally.succeeded:
        raise RuntimeError(f"all {tally.failed} crew API calls failed; first: {tally.failures[0]}")
    return {"succeeded": tally.succeeded, "failed": tally.failed}


def count_users(source: UserTable) -> int:
    """How many users of the table have a context or goal."""
    with source.engine.connect() as conn:
        return count_eligible_users(conn, source.table)
