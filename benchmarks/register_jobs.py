"""The service-job registry (/api/jobs) against Prefect's own client, on SQLite and PostgreSQL.

Run: `uv run --no-sync python -m benchmarks.register_jobs [--jobs N] [--prefect-db
sqlite|postgres|both] [--skip-due] [--prefect-unpatched]` (defaults 1000 jobs on both databases;
on 2 cores `--jobs 1000` takes about 18 minutes on SQLite and 11 on PostgreSQL, 5 to 8 of them
the due minute). Prefect's server, worker and this process's client run with
deployments/prefect_patches.py's fixes, as `make run` does; `--prefect-unpatched` runs Prefect's
own CLI and client as shipped (our API keeps its fixes). It needs
nothing running: for each database it starts a Prefect server on a free port (PREFECT_HOME in a
temp dir; for PostgreSQL a database `bench_prefect_<hex>` on 127.0.0.1:5432, created here and
dropped after), a fake `email-service` (tests/utils/http_source.py), our API under uvicorn on a
temp SQLite database, a process work pool (limit 4, the stack's engine command) and, unless
--skip-due, one process worker polling it from the start, with the tuning of `make run` (worker
query 1 s, prefetch 20 s, scheduler loop 10 s).
Every process it started is stopped at the end, also on an error, Ctrl-C or SIGTERM. Logs go to
.data/bench-logs/bench-jobs-<db>/.

What each number means (wall clock of this process; nothing is asserted):

- register: N jobs (cron `0 9 1 1 *`, so none runs meanwhile) through POST /api/jobs/register
  vs N deployments of the same flow with PrefectClient.create_deployment carrying what our route
  sends (schedule, parameters, schema, tags, pool, job variables; the flow id read once). One
  request at a time (concurrent creates get 503 "database is locked" from Prefect on SQLite),
  ours and Prefect's alternating, so both meet the same database size and background work.
  Totals, medians per job, ratio = ours / Prefect's total (target <= 1.3).
- page: median of 20 GET /api/jobs?limit=50&offset=N vs PrefectClient.read_deployments for the
  same 50 (flow service-job, NAME_ASC, limit 50, offset N), alternating; the two lists of names
  are checked equal first (target <= 1.3).
- stats: job-00000 gets 500 finished runs (created Completed, every fifth Failed); the median
  of 10 GET /api/jobs/job-00000/stats, and the counts it answered.
- due minute: 100 jobs registered through our API with a cron naming one minute M about 3
  minutes ahead (`m h D M *`), so each has exactly one run due at M and nothing after it to stop.
  Counted: these deployments' runs expected in [M, M+60 s), until all
  are final or 12 minutes after M. completed / failed (Failed, Crashed, Cancelled) / lost (jobs
  without a finished run for M) / dup (jobs with more than one run for M, or whose endpoint the
  fake service was called for more than once); runs per minute = finished runs per minute from
  M to the last end; lateness = start_time - expected_start_time (worst, median); median run =
  start_time to end_time; max running = most runs Running at once by their start and end times
  (the pool allows 4). (`* * * * *` jobs were tried first: registered with no worker running,
  each gets 61 runs planned and every passed one is marked Late, which on SQLite kept Prefect's
  database locked for minutes and timed our requests out.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
)
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.schedules import CronSchedule
from prefect.client.schemas.sorting import DeploymentSort
from prefect.states import Completed, Failed

from db.migrate import upgrade
from deployments.pipelines import PIPELINES
from deployments.prefect_patches import cache_schedule_checks
from deployments.stack import worker_env
from deployments.work_pool import ensure_work_pool
from settings import DATA_DIR, PROJECT_DIR
from tests.utils.http_source import HttpSource, Reply, serve_http_source
from tests.utils.ports import free_port
from tests.utils.postgres import scratch_postgres

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/test"
PIPELINE = PIPELINES["service_job"]
POOL, POOL_LIMIT = "bench-jobs", 4
SERVICE, ENDPOINT = "email-service", "/api/jobs/bench"
YEARLY = "0 9 1 1 *"
PAGE, PAGE_SAMPLES, STATS_RUNS, STATS_SAMPLES = 50, 20, 500, 10
DUE_JOBS, DUE_LEAD, DUE_LIMIT = 100, timedelta(minutes=3), timedelta(minutes=12)
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}
Rows = list[tuple[str, str]]


@dataclass
class Stack:
    """What one Prefect database's run started; `cleanup` stops it all."""

    prefect_api: str
    api_url: str
    env: dict[str, str]
    logs: Path
    source: HttpSource
    cleanup: contextlib.ExitStack
    prefect_cli: str  # module run as Prefect's CLI: ours (deployments.prefect_server) or prefect


# -- processes ----------------------------------------------------------------------------------


def start(
    name: str, args: list[str], stack: Stack, env: dict[str, str] | None = None, up: str = ""
) -> None:
    """`python -m <args>` in its own process group, logged, stopped with the stack; with `up`,
    wait until that URL answers."""
    log = stack.logs / f"{name}.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", *args],
            env=env or stack.env,
            cwd=PROJECT_DIR,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    stack.cleanup.callback(stop, proc)
    deadline = time.monotonic() + 180
    while up and time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(up, timeout=3).status_code < 500:
                return
        time.sleep(0.3)
    if up:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-20:])
        raise RuntimeError(f"{name} did not answer {up} (see {log}):\n{tail}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGINT to its group (a Prefect worker ignores one SIGTERM), SIGKILL after 30 s."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGINT)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def scratch_database() -> Iterator[str]:
    """A new, empty PostgreSQL database for Prefect's server (asyncpg URL), dropped afterwards."""
    with scratch_postgres(PG_ADMIN, prefix="bench_prefect_", migrate=False) as url:
        asyncpg = sa.make_url(url).set(drivername="postgresql+asyncpg")
        yield asyncpg.render_as_string(hide_password=False)


@contextlib.contextmanager
def running_stack(db: str, prefect_cli: str, pool: str = POOL) -> Iterator[Stack]:
    """Fake service, Prefect server (on `db`, run by the module `prefect_cli`) and our API
    creating deployments on `pool`; all stopped on exit."""
    with contextlib.ExitStack() as cleanup:
        tmp = Path(cleanup.enter_context(tempfile.TemporaryDirectory(prefix="bench-jobs-")))
        logs = DATA_DIR / "bench-logs" / f"{pool}-{db}"
        logs.mkdir(parents=True, exist_ok=True)
        for old in logs.glob("*.log"):
            old.unlink()
        source = cleanup.enter_context(serve_http_source())
        source.route(ENDPOINT, Reply(200, {"success": True, "itemsProcessed": 1}))
        prefect_port, api_port = free_port(), free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "SP_"))}
        env.pop("PYTHONDONTWRITEBYTECODE", None)  # let flow processes cache bytecode
        for name in ("DATABASE_URL", "API_KEYS", "SERVICE_URLS", "SERVICE_ALLOWLIST"):
            env.pop(name, None)
        env.update(
            PREFECT_HOME=str(tmp / "prefect"),
            PREFECT_API_URL=f"http://127.0.0.1:{prefect_port}/api",
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_UI_ENABLED="false",
            PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS="10",
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_WORKER_PREFETCH_SECONDS="20",
            DATABASE_URL=f"sqlite:///{tmp / 'pipelines.db'}",
            EMAIL_SERVICE_URL=source.url,
            WORK_POOL_NAME=pool,
        )
        stack = Stack(
            env["PREFECT_API_URL"],
            f"http://127.0.0.1:{api_port}",
            env,
            logs,
            source,
            cleanup,
            prefect_cli,
        )
        server_env = dict(env)
        if db == "postgres":
            url = cleanup.enter_context(scratch_database())
            server_env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] = url
        server = [prefect_cli, "server", "start", "--host", "127.0.0.1"]
        server += ["--port", str(prefect_port)]
        start("prefect-server", server, stack, server_env, up=f"{stack.prefect_api}/health")
        upgrade(env["DATABASE_URL"])
        api = ["uvicorn", "api.main:app", "--host", "127.0.0.1", "--port", str(api_port)]
        start("api", api, stack, up=f"{stack.api_url}/health")
        yield stack


# -- the parts ----------------------------------------------------------------------------------


def say(text: str) -> None:
    print(f"{datetime.now(UTC):%H:%M:%S} (load {os.getloadavg()[0]:.1f}) {text}", flush=True)


def registration(name: str, cron: str) -> dict[str, Any]:
    """A job as a service registers it with the registry."""
    return {
        "name": name,
        "displayName": f"Bench {name}",
        "description": "benchmarks.register_jobs",
        "cronExpression": cron,
        "jobType": "bench",
        "service": SERVICE,
        "endpoint": ENDPOINT,
        "config": {"batchSize": 100},
    }


async def register_ours(http: httpx.AsyncClient, name: str, cron: str) -> None:
    response = await http.post("/api/jobs/register", json=registration(name, cron))
    response.raise_for_status()


async def register_prefect(client: PrefectClient, flow_id: uuid.UUID, name: str) -> None:
    """The deployment our route makes for `name`, straight through Prefect's client."""
    params = PIPELINE.parameters.model_validate(
        {
            "job_name": name,
            "service": SERVICE,
            "endpoint": ENDPOINT,
            "config": {"batchSize": 100},
            "display_name": f"Bench {name}",
        }
    )
    await client.create_deployment(
        flow_id=flow_id,
        name=name,
        description="benchmarks.register_jobs",
        entrypoint=PIPELINE.entrypoint,
        work_pool_name=POOL,
        parameters=params.model_dump(mode="json", exclude_none=True),
        parameter_openapi_schema=PIPELINE.parameter_schema(),
        schedules=[
            DeploymentScheduleCreate(
                schedule=CronSchedule(cron=YEARLY, timezone="UTC"), slug="cron"
            )
        ],
        tags=sorted([f"service:{SERVICE}", "job_type:bench", PIPELINE.tag]),
        job_variables={"retries": 0, "retry_delay_seconds": 30},
    )


async def bench_register(http: httpx.AsyncClient, client: PrefectClient, jobs: int) -> Rows:
    """`jobs` registrations each, one request at a time, ours and Prefect's alternating."""
    flow_id = await client.create_flow_from_name(PIPELINE.flow_name)
    times: dict[str, list[float]] = {"ours": [], "prefect": []}
    for i in range(jobs):
        calls = {
            "ours": partial(register_ours, http, f"job-{i:05d}", YEARLY),
            "prefect": partial(register_prefect, client, flow_id, f"direct-{i:05d}"),
        }
        for name in sorted(calls, reverse=i % 2 == 1):
            began = time.perf_counter()
            await calls[name]()
            times[name].append(time.perf_counter() - began)
        if (i + 1) % 100 == 0 or i + 1 == jobs:
            ours, prefect = sum(times["ours"]), sum(times["prefect"])
            say(f"  {i + 1}/{jobs}: ours {ours:.1f} s, Prefect {prefect:.1f} s")
    ours, prefect = sum(times["ours"]), sum(times["prefect"])
    medians = "/".join(f"{statistics.median(times[k]) * 1000:.0f}" for k in ("ours", "prefect"))
    return [
        (f"register {jobs}: ours / Prefect", f"{ours:.1f} s / {prefect:.1f} s"),
        ("register: median per job", f"{medians} ms"),
        ("register: ratio (<= 1.3)", f"{ours / prefect:.2f}x"),
    ]


async def bench_page(http: httpx.AsyncClient, client: PrefectClient, offset: int) -> Rows:
    flows = FlowFilter(name=FlowFilterName(any_=[PIPELINE.flow_name]))

    async def ours() -> list[str]:
        response = await http.get("/api/jobs", params={"limit": PAGE, "offset": offset})
        response.raise_for_status()
        return [job["name"] for job in response.json()["data"]]

    async def prefect() -> list[str]:
        page = await client.read_deployments(
            flow_filter=flows, sort=DeploymentSort.NAME_ASC, limit=PAGE, offset=offset
        )
        return [d.name for d in page]

    if await ours() != await prefect():
        raise RuntimeError("GET /api/jobs and read_deployments disagree on the page")
    times: dict[str, list[float]] = {"ours": [], "prefect": []}
    for i in range(PAGE_SAMPLES):
        for name, call in [("ours", ours), ("prefect", prefect)][:: 1 if i % 2 else -1]:
            began = time.perf_counter()
            await call()
            times[name].append(time.perf_counter() - began)
    mine, theirs = (statistics.median(times[k]) * 1000 for k in ("ours", "prefect"))
    return [
        (f"page of {PAGE}: ours / Prefect", f"{mine:.0f} ms / {theirs:.0f} ms"),
        ("page: ratio (<= 1.3)", f"{mine / theirs:.2f}x"),
    ]


async def bench_stats(http: httpx.AsyncClient, client: PrefectClient, job: str) -> Rows:
    deployment = await client.read_deployment_by_name(f"{PIPELINE.flow_name}/{job}")
    for i in range(STATS_RUNS):  # one at a time: concurrent writes get 503s on SQLite
        state: State[Any] = Failed() if i % 5 == 4 else Completed()
        await client.create_flow_run_from_deployment(deployment.id, state=state)
    times: list[float] = []
    answer: dict[str, Any] = {}
    for _ in range(STATS_SAMPLES):
        began = time.perf_counter()
        response = await http.get(f"/api/jobs/{job}/stats")
        times.append(time.perf_counter() - began)
        response.raise_for_status()
        answer = response.json()["data"]
    return [
        (f"stats, {STATS_RUNS} runs: median", f"{statistics.median(times) * 1000:.0f} ms"),
        (
            "stats: total / ok / failed",
            f"{answer['totalRuns']} / {answer['successfulRuns']} / {answer['failedRuns']}",
        ),
    ]


async def read_runs(
    client: PrefectClient, ids: list[uuid.UUID], runs: FlowRunFilter
) -> list[FlowRun]:
    """All runs of deployments `ids` that pass `runs`, 200 at a time."""
    found: list[FlowRun] = []
    deployments = DeploymentFilter(id=DeploymentFilterId(any_=ids))
    while chunk := await client.read_flow_runs(
        deployment_filter=deployments, flow_run_filter=runs, limit=200, offset=len(found)
    ):
        found += chunk
    return found


async def bench_due(stack: Stack, http: httpx.AsyncClient, client: PrefectClient) -> Rows:
    """DUE_JOBS jobs whose cron names one minute M, so each has exactly one run due then."""
    minute = (datetime.now(UTC) + DUE_LEAD).replace(second=0, microsecond=0)
    cron = f"{minute.minute} {minute.hour} {minute.day} {minute.month} *"
    names = [f"due-{i:03d}" for i in range(DUE_JOBS)]
    for name in names:
        await register_ours(http, name, cron)
    found = await client.read_deployments(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names))
    )
    by_id = {d.id: d.name for d in found}
    at_minute = FlowRunFilter(
        expected_start_time=FlowRunFilterExpectedStartTime(
            after_=minute, before_=minute + timedelta(seconds=59)
        )
    )
    runs = await read_runs(client, list(by_id), at_minute)
    say(f"  M = {minute:%H:%M}; {len(runs)} runs planned for it so far")
    while datetime.now(UTC) < minute + DUE_LIMIT:
        await asyncio.sleep(10)
        runs = await read_runs(client, list(by_id), at_minute)
        done = sum(1 for r in runs if r.state_type in FINAL)
        say(f"  {done}/{len(runs)} finished")
        if done == len(runs) >= len(by_id):
            break
    return due_rows(runs, by_id, minute, stack.source)


def due_rows(
    runs: list[FlowRun],
    by_id: dict[uuid.UUID, str],
    minute: datetime,
    source: HttpSource,
    pool_limit: int = POOL_LIMIT,
) -> Rows:
    done = [r for r in runs if r.state_type in FINAL]
    completed = sum(1 for r in done if r.state_type == StateType.COMPLETED)
    per_job = Counter(by_id[r.deployment_id] for r in runs if r.deployment_id)
    calls = Counter(json.loads(request["body"])["jobName"] for request in source.requests)
    lost = len(by_id) - len({r.deployment_id for r in done})
    duplicated = sum(1 for job in by_id.values() if per_job[job] > 1 or calls[job] > 1)
    spans = [(r.start_time, r.end_time) for r in done if r.start_time and r.end_time]
    late = [
        (r.start_time - r.expected_start_time).total_seconds()
        for r in done
        if r.start_time and r.expected_start_time
    ]
    runs_s = [(end - start).total_seconds() for start, end in spans]
    last_end = max((end for _, end in spans), default=None)
    minutes = (last_end.timestamp() - minute.timestamp()) / 60 if last_end else 0
    running = most = 0
    for _, step in sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans]):
        running += step
        most = max(most, running)
    return [
        (
            f"due: completed/failed/lost/dup of {len(by_id)}",
            f"{completed} / {len(done) - completed} / {lost} / {duplicated}",
        ),
        ("due: runs per minute", f"{len(done) / minutes:.1f}" if minutes else "n/a"),
        (
            "due: lateness worst / median",
            f"{max(late):.1f} s / {statistics.median(late):.1f} s" if late else "n/a",
        ),
        (
            "due: median run, start to end",
            f"{statistics.median(runs_s):.1f} s" if runs_s else "n/a",
        ),
        (f"due: max running (pool limit {pool_limit})", str(most)),
    ]


async def bench_database(db: str, prefect_cli: str, jobs: int, skip_due: bool) -> Rows:
    with running_stack(db, prefect_cli) as stack:
        async with (
            PrefectClient(api=stack.prefect_api) as client,
            httpx.AsyncClient(base_url=stack.api_url, timeout=120) as http,
        ):
            await ensure_work_pool(client, POOL, POOL_LIMIT, f"{sys.executable} -m prefect.engine")
            if not skip_due:
                # For the due minute the worker polls from the start, as in `make run`, so
                # registration is measured beside its polling (a write every second).
                worker = [stack.prefect_cli, "worker", "start", "--pool", POOL, "--type", "process"]
                start("worker", worker, stack, worker_env(stack.env))
            say(f"[{db}] register {jobs} + {jobs}")
            rows = await bench_register(http, client, jobs)
            say(f"[{db}] page of {PAGE}")
            rows += await bench_page(http, client, offset=jobs)
            say(f"[{db}] stats")
            rows += await bench_stats(http, client, "job-00000")
            if not skip_due:
                say(f"[{db}] {DUE_JOBS} jobs due in one minute")
                rows += await bench_due(stack, http, client)
            return rows


def report(results: dict[str, Rows]) -> None:
    labels = list(dict.fromkeys(label for rows in results.values() for label, _ in rows))
    values = {db: dict(rows) for db, rows in results.items()}
    width = max(len(label) for label in labels)
    print("\n" + " " * width + "".join(f"  {db:<30}" for db in results))
    for label in labels:
        print(label.ljust(width) + "".join(f"  {values[db].get(label, '-'):<30}" for db in results))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--jobs", type=int, default=1000, help="jobs to register (default 1000)")
    parser.add_argument("--prefect-db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--skip-due", action="store_true", help="leave out the due minute")
    parser.add_argument(
        "--prefect-unpatched",
        action="store_true",
        help="run Prefect's server, worker and client here without deployments.prefect_patches",
    )
    args = parser.parse_args()
    prefect_cli = "prefect" if args.prefect_unpatched else "deployments.prefect_server"
    if not args.prefect_unpatched:
        cache_schedule_checks()  # Prefect's client here parses deployments, as our API does
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up on SIGTERM too
    results: dict[str, Rows] = {}
    for db in ["sqlite", "postgres"] if args.prefect_db == "both" else [args.prefect_db]:
        try:
            results[db] = asyncio.run(bench_database(db, prefect_cli, args.jobs, args.skip_due))
        except Exception as exc:
            traceback.print_exc()
            say(f"[{db}] failed: {exc!r}")
            results[db] = [("failed", repr(exc)[:30])]
        report(results)


if __name__ == "__main__":
    main()
