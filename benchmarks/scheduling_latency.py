"""When runs start: the warm worker beside Prefect's stock process worker, in one run.

Run: `.venv/bin/python -m benchmarks.scheduling_latency [--prefect-db sqlite|postgres|both]
[--workers warm-process,process] [--run-now N] [--burst N] [--lead S]`. It needs nothing
running: for each Prefect database it starts a Prefect server, our API and a fake
`email-service` answering every job in 50 ms (benchmarks/register_jobs.py's stack, with
`make run`'s tuning: worker query 1 s, scheduler loop 10 s); then, for each worker type in
turn, a work pool of that type and one worker polling it, with the type's defaults from
settings.py (pool limit 128 warm / 4 stock, prefetch 60 s warm / 20 s stock). Logs go to
.data/bench-logs/. Nothing is asserted.

Measured per worker type, on this machine's wall clock:

- run-now -> Running: N sequential POST /api/jobs/{name}/trigger; from just before the
  request to the timestamp Prefect's server gave the run's Running state (target: median
  <= 0.5 s), and its three parts (our API creates the run; the worker claims it; the run's
  process starts).
- burst: N service jobs registered with a cron naming one minute M (`--lead` seconds ahead, more
  than the prefetch plus the time to register them, so each has one run then); completed /
  failed / lost / duplicated (counted at the fake service too), runs per minute, lateness =
  Running - scheduled (p95 target <= 5 s, worst <= 10 s), max running at once.
- memory: while the burst runs, every second, the private memory (Private_Clean +
  Private_Dirty of /proc/PID/smaps_rollup) of each flow run process (the zygote's children for
  the warm worker, the worker's children for the stock one); the median per process (target
  <= 30 MB for the warm worker), and the zygote's own resident size.
- cron lateness: an every-minute job registered at the start; Running - scheduled of each of
  its runs, those in the burst's minute left out (p95 target <= 1 s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import statistics
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
)
from prefect.client.schemas.objects import FlowRun, StateType

from benchmarks.register_jobs import (
    ENDPOINT,
    FINAL,
    Rows,
    Stack,
    due_rows,
    read_runs,
    register_ours,
    report,
    running_stack,
    say,
    start,
)
from deployments.stack import worker_env
from deployments.stats import percentile
from deployments.work_pool import ensure_work_pool
from settings import Settings
from tests.utils.http_source import Reply


def worker_settings(worker_type: str) -> Settings:
    """The settings `make run` would give a worker of this type (its pool limit, prefetch)."""
    return Settings(worker_type=worker_type)


POOL_LIMITS = {kind: worker_settings(kind).pool_concurrency for kind in ("warm-process", "process")}
BURST_LIMIT = timedelta(minutes=10)


def seconds(values: list[float], q: float) -> str:
    value = percentile(values, q)
    return "n/a" if value is None else f"{value:.2f} s"


# -- processes and their memory -----------------------------------------------------------------


def children(pid: int) -> list[int]:
    """The pids whose parent is `pid`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                stat = (entry / "stat").read_text()
                if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


def private_mb(pid: int) -> float | None:
    """A process's private memory (clean + dirty), in MB; None once it is gone."""
    try:
        lines = Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()
    except OSError:
        return None
    kb = sum(int(line.split()[1]) for line in lines if line.startswith("Private_"))
    return kb / 1024


def rss_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def flow_processes(worker_type: str) -> tuple[list[int], int | None]:
    """The running flow run processes of `worker_type`, and the warm worker's zygote.

    The warm worker's runs are the zygote's children; the stock worker's are
    `python -m prefect.engine` processes (this benchmark runs one worker at a time).
    """
    pids = [int(p.name) for p in Path("/proc").iterdir() if p.name.isdigit()]
    if worker_type != "warm-process":
        return [pid for pid in pids if b"prefect.engine" in cmdline(pid)], None
    zygotes = [pid for pid in pids if b"deployments.zygote" in cmdline(pid)]
    runs = [child for zygote in zygotes for child in children(zygote)]
    return runs, zygotes[0] if zygotes else None


# Which process is which, by a piece of its command line.
ROLES = (
    (b"server\x00start", "server"),
    (b"worker\x00start", "worker"),
    (b"deployments.zygote", "zygote + runs"),
    (b"api.main:app", "api"),
)


def cpu_by_role() -> dict[str, float]:
    """CPU seconds so far of the Prefect server, the worker(s), and the flow runs: the warm
    worker's reaped children count in their zygote's cutime/cstime, the stock worker's in the
    worker's."""
    tick = os.sysconf("SC_CLK_TCK")
    found: dict[str, float] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        line = cmdline(int(entry.name))
        role = next((role for marker, role in ROLES if marker in line), None)
        if role is None:
            continue
        with contextlib.suppress(OSError, IndexError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            own = int(fields[11]) + int(fields[12])
            reaped = int(fields[13]) + int(fields[14])
            found[role] = found.get(role, 0) + (own + reaped) / tick
    return found


async def sample_memory(worker_type: str, stop: asyncio.Event) -> tuple[list, list]:
    """Each second until `stop`: the private MB of every flow process, and the zygote's RSS."""
    per_process: list[float] = []
    zygote_rss: list[float] = []
    while not stop.is_set():
        processes, zygote = flow_processes(worker_type)
        per_process += [mb for pid in processes if (mb := private_mb(pid)) is not None]
        if zygote is not None and (mb := rss_mb(zygote)) is not None:
            zygote_rss.append(mb)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 1)
    return per_process, zygote_rss


# -- the parts ----------------------------------------------------------------------------------


async def deployment_ids(client: PrefectClient, names: list[str]) -> dict[uuid.UUID, str]:
    found = await client.read_deployments(
        deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=names))
    )
    return {d.id: d.name for d in found}


async def run_now(http: httpx.AsyncClient, client: PrefectClient, job: str, n: int) -> Rows:
    """n triggers one after another; seconds from the request to the Running timestamp, and
    its parts: request -> Scheduled (our API creates the run), Scheduled -> Pending (the
    worker picks it up), Pending -> Running (the run's process starts and says so)."""
    waits: list[float] = []
    parts: dict[str, list[float]] = {"scheduled": [], "pending": [], "running": []}
    # The floor, measured in the same run: one read of a flow run from Prefect's API (the
    # path from run-now to Running makes about a dozen such calls one after another).
    round_trips: list[float] = []
    for _ in range(n):
        asked = datetime.now(UTC)
        started = await http.post(f"/api/jobs/{job}/trigger")
        started.raise_for_status()
        run_id = uuid.UUID(started.json()["executionId"])
        run: FlowRun | None = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            asked_prefect = time.perf_counter()
            run = await client.read_flow_run(run_id)
            round_trips.append(time.perf_counter() - asked_prefect)
            if run.start_time is not None and run.state_type in {StateType.RUNNING, *FINAL}:
                break
            await asyncio.sleep(0.05)
        if run is not None and run.start_time is not None:
            waits.append(run.start_time.timestamp() - asked.timestamp())
            states = {
                state.type: state.timestamp.timestamp()
                for state in reversed(await client.read_flow_run_states(run_id))
            }
            steps = [asked.timestamp()] + [
                states.get(kind) for kind in (StateType.SCHEDULED, StateType.PENDING)
            ]
            steps.append(run.start_time.timestamp())
            for name, (before, after) in zip(parts, itertools.pairwise(steps), strict=True):
                if before is not None and after is not None:
                    parts[name].append(after - before)
        while run is not None and run.state_type not in FINAL:
            await asyncio.sleep(0.2)
            run = await client.read_flow_run(run_id)
    return [
        (
            f"run-now -> Running, {len(waits)} runs: min / median / p95",
            f"{min(waits):.2f} / {statistics.median(waits):.2f} / {seconds(waits, 95)}"
            if waits
            else "n/a",
        ),
        (
            "run-now: median request->Scheduled / ->Pending / ->Running",
            " / ".join(
                f"{statistics.median(values):.3f}" if values else "n/a" for values in parts.values()
            )
            + " s",
        ),
        (
            "floor: one Prefect API read, median (run-now / it)",
            f"{statistics.median(round_trips) * 1000:.0f} ms "
            f"({statistics.median(waits) / statistics.median(round_trips):.0f}x)"
            if waits and round_trips
            else "n/a",
        ),
    ]


async def burst(
    stack: Stack,
    http: httpx.AsyncClient,
    client: PrefectClient,
    worker_type: str,
    jobs: int,
    lead: float,
) -> tuple[Rows, datetime]:
    """`jobs` jobs due in one minute: outcome, lateness and memory of their runs."""
    minute = (datetime.now(UTC) + timedelta(seconds=lead)).replace(second=0, microsecond=0)
    if minute < datetime.now(UTC) + timedelta(seconds=lead - 60):
        minute += timedelta(minutes=1)
    cron = f"{minute.minute} {minute.hour} {minute.day} {minute.month} *"
    names = [f"burst-{worker_type}-{i:03d}" for i in range(jobs)]
    for name in names:
        await register_ours(http, name, cron)
    by_id = await deployment_ids(client, names)
    at_minute = FlowRunFilter(
        expected_start_time=FlowRunFilterExpectedStartTime(
            after_=minute, before_=minute + timedelta(seconds=59)
        )
    )
    say(f"  burst of {jobs} at {minute:%H:%M}")
    cpu_before = cpu_by_role()
    stop = asyncio.Event()
    sampler = asyncio.create_task(sample_memory(worker_type, stop))
    runs: list[FlowRun] = []
    while datetime.now(UTC) < minute + BURST_LIMIT:
        await asyncio.sleep(5)
        runs = await read_runs(client, list(by_id), at_minute)
        done = sum(1 for r in runs if r.state_type in FINAL)
        if datetime.now(UTC) > minute:
            say(f"  {done}/{len(runs)} finished")
        if done == len(runs) >= len(by_id):
            break
    stop.set()
    per_process, zygote = await sampler
    cpu_after = cpu_by_role()
    cpu = {role: cpu_after[role] - cpu_before.get(role, 0) for role in cpu_after}
    late = [
        (r.start_time - r.expected_start_time).total_seconds()
        for r in runs
        if r.start_time and r.expected_start_time
    ]
    rows = [
        (label.replace("due:", "burst:"), value)
        for label, value in due_rows(runs, by_id, minute, stack.source, POOL_LIMITS[worker_type])
    ]
    rows += [
        ("burst: lateness p95 / worst", f"{seconds(late, 95)} / {seconds(late, 100)}"),
        (
            "memory: private MB per flow process (median, samples)",
            f"{statistics.median(per_process):.1f} ({len(per_process)})" if per_process else "n/a",
        ),
        ("memory: zygote RSS MB", f"{max(zygote):.0f}" if zygote else "-"),
        (
            "burst: CPU s per run by process",
            ", ".join(f"{role} {seconds / jobs:.2f}" for role, seconds in sorted(cpu.items())),
        ),
    ]
    return rows, minute


async def cron_lateness(client: PrefectClient, job: str, skip: datetime) -> Rows:
    by_id = await deployment_ids(client, [job])
    runs = await read_runs(client, list(by_id), FlowRunFilter())
    late = [
        (r.start_time - r.expected_start_time).total_seconds()
        for r in runs
        if r.start_time and r.expected_start_time and r.expected_start_time != skip
    ]
    return [
        (
            f"cron lateness, {len(late)} runs: p50 / p95 / max",
            f"{seconds(late, 50)} / {seconds(late, 95)} / {seconds(late, 100)}",
        )
    ]


async def bench_worker(
    stack: Stack, http: httpx.AsyncClient, worker_type: str, args: argparse.Namespace
) -> Rows:
    pool = f"bench-{worker_type}"
    env = {**stack.env, "WORK_POOL_NAME": pool, "WORKER_TYPE": worker_type}
    if args.query_seconds is not None:
        env["PREFECT_WORKER_QUERY_SECONDS"] = str(args.query_seconds)
    prefetch = args.prefetch_seconds
    if prefetch is None:
        prefetch = worker_settings(worker_type).prefetch_seconds
    env["PREFECT_WORKER_PREFETCH_SECONDS"] = str(prefetch)
    async with PrefectClient(api=stack.prefect_api) as client:
        await ensure_work_pool(
            client,
            pool,
            POOL_LIMITS[worker_type],
            "python -m prefect.engine",
            worker_type,
        )
        worker = [stack.prefect_cli, "worker", "start", "--pool", pool, "--type", worker_type]
        start(f"worker-{worker_type}", worker, stack, worker_env(env))
        every_minute, quick = f"cron-{worker_type}", f"now-{worker_type}"
        await register_ours(http, every_minute, "* * * * *")
        await register_ours(http, quick, "0 9 1 1 *")
        await asyncio.sleep(8)  # the worker is up and its zygote warm
        say(f"[{worker_type}] run-now x {args.run_now}")
        rows = await run_now(http, client, quick, args.run_now)
        if args.burst:
            say(f"[{worker_type}] burst")
            burst_rows, minute = await burst(
                stack, http, client, worker_type, args.burst, args.lead
            )
            rows += burst_rows
            rows += await cron_lateness(client, every_minute, minute)
        await http.post(f"/api/jobs/{every_minute}/disable")
        return rows


async def bench_database(db: str, args: argparse.Namespace) -> dict[str, Rows]:
    results: dict[str, Rows] = {}
    for worker_type in args.workers:
        # One stack per worker type: our API creates deployments on the pool of its
        # WORK_POOL_NAME, so each worker type gets its own API (and Prefect server).
        with running_stack(db, "deployments.prefect_server", pool=f"bench-{worker_type}") as stack:
            answer = {"success": True, "itemsProcessed": 1}
            stack.source.route(ENDPOINT, Reply(200, answer, delay=0.05))
            async with httpx.AsyncClient(base_url=stack.api_url, timeout=120) as http:
                results[f"{db} {worker_type}"] = await bench_worker(stack, http, worker_type, args)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--prefect-db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--workers", default="warm-process,process")
    parser.add_argument("--run-now", type=int, default=10)
    parser.add_argument("--burst", type=int, default=100)
    parser.add_argument("--lead", type=float, default=200, help="seconds to the burst's minute")
    parser.add_argument(
        "--query-seconds",
        type=float,
        default=None,
        help="the worker's poll interval (default 1 s, as make run): a long one shows what the "
        "events stream alone does",
    )
    parser.add_argument(
        "--prefetch-seconds",
        type=float,
        default=None,
        help="how far ahead the worker starts runs (default: make run's for its type)",
    )
    parser.add_argument(
        "--warm-limit", type=int, default=None, help="the warm pool's limit (default: settings')"
    )
    args = parser.parse_args()
    if args.warm_limit:
        POOL_LIMITS["warm-process"] = args.warm_limit
    args.workers = [w.strip() for w in args.workers.split(",") if w.strip()]
    dbs = ["sqlite", "postgres"] if args.prefect_db == "both" else [args.prefect_db]
    results: dict[str, Rows] = {}
    for db in dbs:
        results.update(asyncio.run(bench_database(db, args)))
    report(results)


if __name__ == "__main__":
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    main()
