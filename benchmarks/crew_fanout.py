"""The crew pipeline's fan-out: the whole flow run versus the latency floor and raw clients.

Run: `uv run python -m benchmarks.crew_fanout [--users 1000] [--latency 0.05] [--concurrency 50]
[--repeat 3] [--only sqlite|postgres]`.

The fake crew API (tests/utils/fake_crew.py, uvicorn + httptools + uvloop) runs in its own
process and answers every call after `--latency` seconds. The floor is users x latency /
concurrency: what perfect overlap of the calls would take. Measured in this one process
(best of `--repeat`; the variants alternate, so all see the same machine):

- raw baselines, the answers kept in memory: plain asyncio + a semaphore + one
  `httpx.AsyncClient` (its own pool, max_connections = concurrency); the same with the pool
  split into 10 clients of concurrency/10 connections; one httpx client on the `httpx-aiohttp`
  transport; `flows.crew_calls.CrewCaller` alone (httpx requests straight to that transport:
  what the flow's tasks run); plain `aiohttp`. cpu = this process's CPU seconds.
- flow: `crew_responses` run in-process against a temporary Prefect server, reading the users
  from and writing the 1,000 rows to our database on SQLite, then on PostgreSQL (scratch
  database). `in flow` is the time from the flow body's start to the end of its last store (the
  outcome's `seconds`: load, calls, storage, progress artifact); `wall` adds Prefect's own cost
  of a flow run called in-process (creating the run, its state changes), shown alone by an
  empty flow.
- task per user (once): the same calls, one Prefect task each, gathered in a flow; the
  batching choice, measured.

Nothing is asserted; the exit code is 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import httpx
import sqlalchemy as sa
from httpx_aiohttp import AiohttpTransport

from tests.utils.ports import free_port
from tests.utils.postgres import scratch_postgres

PROJECT_DIR = Path(__file__).resolve().parent.parent
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"


@dataclass
class Timing:
    name: str
    wall: float
    cpu: float | None = None
    in_flow: float | None = None


def payloads(users: int) -> list[dict[str, str]]:
    return [
        {"customer_business_background_latest": f"Business {i}", "customer_goal_latest": "Grow"}
        for i in range(users)
    ]


async def fan_out(
    post: Callable[[int, dict[str, str]], Awaitable[Any]], bodies: list[dict[str, str]], limit: int
) -> list[Any]:
    slots = asyncio.Semaphore(limit)

    async def one(i: int) -> Any:
        async with slots:
            return await post(i, bodies[i])

    return list(await asyncio.gather(*(one(i) for i in range(len(bodies)))))


async def raw_httpx(url: str, bodies: list[dict[str, str]], limit: int, pools: int) -> None:
    per_pool = max(1, limit // pools)
    limits = httpx.Limits(max_connections=per_pool, max_keepalive_connections=per_pool)
    clients = [httpx.AsyncClient(limits=limits, timeout=30) for _ in range(pools)]

    async def post(i: int, body: dict[str, str]) -> Any:
        return (await clients[i % pools].post(url, json=body)).json()

    try:
        await fan_out(post, bodies, limit)
    finally:
        for client in clients:
            await client.aclose()


async def raw_httpx_aiohttp(url: str, bodies: list[dict[str, str]], limit: int) -> None:
    limits = httpx.Limits(max_connections=limit, max_keepalive_connections=limit)
    async with httpx.AsyncClient(transport=AiohttpTransport(limits=limits), timeout=30) as client:

        async def post(_i: int, body: dict[str, str]) -> Any:
            return (await client.post(url, json=body)).json()

        await fan_out(post, bodies, limit)


async def raw_caller(url: str, users: int, limit: int) -> None:
    from flows.crew_calls import CrewCaller, CrewUser, crew_transport

    people = [CrewUser(f"u{i}", f"Business {i}", "Grow") for i in range(users)]
    async with crew_transport(limit) as transport:
        caller = CrewCaller(
            transport, url, concurrency=limit, retries=0, backoff_seconds=0, timeout_seconds=30
        )
        await caller.call_all(people)


async def raw_aiohttp(url: str, bodies: list[dict[str, str]], limit: int) -> None:
    connector = aiohttp.TCPConnector(limit=limit)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def post(_i: int, body: dict[str, str]) -> Any:
            async with session.post(url, json=body) as response:
                return await response.json()

        await fan_out(post, bodies, limit)


async def timed(name: str, work: Callable[[], Awaitable[Any]]) -> Timing:
    started, cpu = time.perf_counter(), time.process_time()
    await work()
    return Timing(name, time.perf_counter() - started, time.process_time() - cpu)


@contextmanager
def fake_crew(latency: float) -> Iterator[str]:
    port = free_port()
    command = [sys.executable, "-m", "tests.utils.fake_crew", "--port", str(port)]
    proc = subprocess.Popen([*command, "--latency", str(latency)], cwd=PROJECT_DIR)
    url = f"http://127.0.0.1:{port}/run-crew"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.post(url, json={}, timeout=1)
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def use_database(url: str, users: int) -> None:
    """Point our settings at `url`, with `users` users and no responses."""
    from db.crew import upsert_users
    from db.engine import get_engine
    from db.migrate import upgrade
    from settings import get_settings

    os.environ["DATABASE_URL"] = url
    get_settings.cache_clear()
    get_engine.cache_clear()
    upgrade(url)
    with get_engine().begin() as conn:
        conn.execute(sa.text("DELETE FROM users"))
        rows = [
            {"uid": f"u{i:05d}", "context": f"Business {i}", "goal": "Grow"} for i in range(users)
        ]
        upsert_users(conn, rows)


def clear_responses() -> None:
    from db.engine import get_engine

    with get_engine().begin() as conn:
        conn.execute(sa.text("DELETE FROM crew_responses"))


async def flow_timing(name: str, limit: int) -> Timing:
    from flows.crew_responses import crew_responses

    clear_responses()
    started = time.perf_counter()
    state = await crew_responses(concurrency=limit, retries=0, return_state=True)
    wall = time.perf_counter() - started
    result = await state.result()  # type: ignore[misc]
    assert result["succeeded"] > 0, result
    from sqlmodel import Session, select

    from db.engine import get_engine
    from db.models import RunOutcome

    with Session(get_engine()) as session:
        outcome = session.exec(
            select(RunOutcome).where(RunOutcome.flow_run_id == state.state_details.flow_run_id)
        ).one()
    return Timing(name, wall, in_flow=float(outcome.meta["seconds"]))


async def empty_flow_timing() -> Timing:
    from prefect import flow

    @flow(name="empty")
    async def empty() -> None:
        return None

    return await timed("empty flow (Prefect's cost)", empty)


async def task_per_user_timing(url: str, users: int, limit: int) -> Timing:
    """The flow's own caller, but one Prefect task per user instead of one per batch."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    from flows.common import unwalked
    from flows.crew_calls import CrewCaller, CrewResult, CrewUser, crew_transport

    @task(cache_policy=NO_CACHE)
    async def call_one(caller: CrewCaller, user: CrewUser) -> CrewResult:
        return await caller.call(user)

    @flow(name="task-per-user")
    async def per_user() -> None:
        async with crew_transport(limit) as transport:
            caller = CrewCaller(
                transport, url, concurrency=limit, retries=0, backoff_seconds=0, timeout_seconds=30
            )
            people = [CrewUser(f"u{i}", f"Business {i}", "Grow") for i in range(users)]
            await asyncio.gather(*(call_one(unwalked(caller), p) for p in people))

    return await timed("task per user (once)", per_user)


def best(timings: list[Timing]) -> Timing:
    return min(timings, key=lambda t: t.in_flow if t.in_flow is not None else t.wall)


def report(rows: list[Timing], floor: float) -> None:
    print(f"\nfloor = {floor:.3f} s")
    print(f"{'':38} {'wall s':>8} {'x floor':>8} {'in flow':>8} {'x floor':>8} {'cpu s':>7}")
    for t in rows:
        in_flow = f"{t.in_flow:8.3f} {t.in_flow / floor:8.2f}" if t.in_flow else " " * 17
        cpu = f"{t.cpu:7.3f}" if t.cpu is not None else ""
        print(f"{t.name:38} {t.wall:8.3f} {t.wall / floor:8.2f} {in_flow} {cpu}")


async def bench(args: argparse.Namespace, url: str, databases: dict[str, str]) -> list[Timing]:
    bodies = payloads(args.users)
    raw: dict[str, Callable[[], Awaitable[None]]] = {
        "raw httpx, 1 pool": lambda: raw_httpx(url, bodies, args.concurrency, 1),
        "raw httpx, 10 pools": lambda: raw_httpx(url, bodies, args.concurrency, 10),
        "raw httpx + aiohttp transport": lambda: raw_httpx_aiohttp(url, bodies, args.concurrency),
        "CrewCaller (httpx transport, aiohttp)": lambda: raw_caller(
            url, args.users, args.concurrency
        ),
        "raw aiohttp": lambda: raw_aiohttp(url, bodies, args.concurrency),
    }
    samples: dict[str, list[Timing]] = {}
    await raw_aiohttp(url, bodies, args.concurrency)  # warm the server up
    for _ in range(args.repeat):
        for name, work in raw.items():
            samples.setdefault(name, []).append(await timed(name, work))
    rows = [best(samples[name]) for name in raw]
    rows.append(best([await empty_flow_timing() for _ in range(args.repeat)]))
    for db, db_url in databases.items():
        use_database(db_url, args.users)
        name = f"flow crew_responses, {db}"
        rows.append(best([await flow_timing(name, args.concurrency) for _ in range(args.repeat)]))
    rows.append(await task_per_user_timing(url, args.users, args.concurrency))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1_000)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", choices=("sqlite", "postgres"))
    args = parser.parse_args()
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "ERROR")
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    from prefect.testing.utilities import prefect_test_harness

    floor = args.users * args.latency / args.concurrency
    with tempfile.TemporaryDirectory() as tmp, fake_crew(args.latency) as url:
        os.environ["CREW_API_URL"] = url
        databases: dict[str, str] = {}
        with contextlib.ExitStack() as stack:
            if args.only != "postgres":
                databases["SQLite"] = f"sqlite:///{tmp}/crew.db"
            if args.only != "sqlite":
                admin = os.environ.get("TEST_POSTGRES_URL", DEFAULT_PG)
                databases["PostgreSQL"] = stack.enter_context(
                    scratch_postgres(admin, prefix="sp_bench_")
                )
            with prefect_test_harness(server_startup_timeout=120):
                rows = asyncio.run(bench(args, url, databases))
    report(rows, floor)


if __name__ == "__main__":
    main()
