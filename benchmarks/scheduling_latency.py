"""Scheduling latency of the running stack (`make run`): how long until a flow run is Running.

Run: `uv run --no-sync python -m benchmarks.scheduling_latency [--runs N] [--cron-runs M]
[--skip-cron]` with the stack already up (Prefect on :4200, our API on :8000).

What is measured, all on the one machine's wall clock (UTC):

- floor: the median of 3 fresh `python -c "import prefect, flows.api_call"` subprocesses. A
  flow run is a new Python process that imports Prefect and our flow before it can report
  Running, so no run on this machine starts faster than this; it is the cost of starting a
  flow process at all, not a target.
- run-now -> Running: N sequential runs of a manual schedule `bench-run-now`; from just before
  POST /api/schedules/bench-run-now/run to the timestamp the Prefect server gave the run's
  Running state. It adds to the floor: the worker's poll interval (PREFECT_WORKER_QUERY_SECONDS),
  its bookkeeping, and the engine's API calls before Running. Target: median <= floor + 1 s.
- cron lateness: M runs of a `* * * * *` schedule `bench-cron`; Running timestamp minus the
  run's expected start time. The worker claims runs PREFECT_WORKER_PREFETCH_SECONDS early and
  the server holds Running back until the scheduled time, so the process start is hidden and
  lateness can be ~0 (or slightly negative: the server rounds its wait to whole seconds).
  Target: p95 <= 1 s.

Both schedules are deleted at the end, also on Ctrl-C or error. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import httpx
from prefect import get_client
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterDeploymentId
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL, temporary_settings

from deployments.stats import percentile
from settings import PROJECT_DIR

API_URL = "http://127.0.0.1:8000"
PREFECT_URL = "http://127.0.0.1:4200"
RUN_NOW, CRON = "bench-run-now", "bench-cron"
PREFETCH_SECONDS = float(os.environ.get("PREFECT_WORKER_PREFETCH_SECONDS", "10"))
RUN_TIMEOUT = 120.0
FINAL = {StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


def spec(name: str, timing: dict[str, Any]) -> dict[str, Any]:
    """An api_call schedule reading the bundled demo endpoint (works offline)."""
    return {
        "name": name,
        "pipeline": "api_call",
        "timing": timing,
        "tags": ["benchmark"],
        "parameters": {
            "source": {"base_url": API_URL},
            "request": {"path": "/demo/prices", "timeout_seconds": 10},
            "extract": {
                "root": "data[]",
                "fields": {"symbol": "symbol", "usd": "quote.usd"},
                "key": "symbol",
            },
        },
    }


def stack_is_up() -> bool:
    try:
        return (
            httpx.get(f"{API_URL}/health", timeout=5).status_code == 200
            and httpx.get(f"{PREFECT_URL}/api/health", timeout=5).status_code == 200
        )
    except httpx.TransportError:
        return False


def measure_floor(repeats: int = 3) -> float:
    """Median wall time of a fresh interpreter importing Prefect and our flow."""
    times = []
    for _ in range(repeats):
        began = time.perf_counter()
        subprocess.run(
            [sys.executable, "-c", "import prefect, flows.api_call"], cwd=PROJECT_DIR, check=True
        )
        times.append(time.perf_counter() - began)
    floor = statistics.median(times)
    print(f"floor: {', '.join(f'{t:.2f}' for t in times)} s -> median {floor:.2f} s")
    return floor


def delete_schedule(name: str) -> None:
    """Delete through our API; a missing schedule is fine."""
    response = httpx.delete(f"{API_URL}/api/schedules/{name}", timeout=30)
    if response.status_code not in (204, 404):
        print(f"could not delete {name}: {response.status_code} {response.text}")


async def create_schedule(http: httpx.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    response = await http.post("/api/schedules", json=body)
    response.raise_for_status()
    return response.json()


async def running_time(client: PrefectClient, run_id: uuid.UUID) -> datetime | None:
    """When the run first entered Running, by the server's state timestamp."""
    states = await client.read_flow_run_states(run_id)
    running = [s.timestamp for s in states if s.type == StateType.RUNNING]
    return min(running) if running else None


async def wait_final(client: PrefectClient, run_id: uuid.UUID) -> FlowRun:
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        run = await client.read_flow_run(run_id)
        if run.state_type in FINAL:
            return run
        await asyncio.sleep(0.25)
    raise TimeoutError(f"flow run {run_id} did not finish within {RUN_TIMEOUT:.0f} s")


async def bench_run_now(http: httpx.AsyncClient, client: PrefectClient, runs: int) -> list[float]:
    """Seconds from POST .../run to Running, for `runs` sequential runs."""
    await create_schedule(http, spec(RUN_NOW, {"type": "manual"}))
    latencies = []
    for i in range(1, runs + 1):
        t0 = datetime.now(UTC)
        response = await http.post(f"/api/schedules/{RUN_NOW}/run")
        response.raise_for_status()
        run_id = uuid.UUID(response.json()["flow_run_id"])
        run = await wait_final(client, run_id)
        started = await running_time(client, run_id)
        if run.state_type != StateType.COMPLETED or started is None:
            print(f"  run-now {i}/{runs}: ended {run.state_name}; left out")
            continue
        latencies.append((started - t0).total_seconds())
        print(f"  run-now {i}/{runs}: Running after {latencies[-1]:.2f} s")
    return latencies


@dataclass
class CronResult:
    lateness: list[float]
    note: str = ""


async def bench_cron(http: httpx.AsyncClient, client: PrefectClient, runs: int) -> CronResult:
    """Running minus expected start for `runs` completed runs of a every-minute schedule."""
    created = datetime.now(UTC)
    view = await create_schedule(http, spec(CRON, {"type": "cron", "cron": "* * * * *"}))
    print(f"  {CRON} created at {created:%H:%M:%S}; about {runs + 1} minutes to go")
    runs_filter = FlowRunFilter(
        deployment_id=FlowRunFilterDeploymentId(any_=[uuid.UUID(view["deployment_id"])])
    )
    result = CronResult([])
    wanted, seen, skip_first, done = runs, 0, False, list[FlowRun]()
    deadline = time.monotonic() + (runs + 4) * 60
    while time.monotonic() < deadline:
        found = await client.read_flow_runs(
            flow_run_filter=runs_filter, sort=FlowRunSort.EXPECTED_START_TIME_ASC, limit=200
        )
        done = [r for r in found if r.state_type in FINAL]
        if len(done) > seen:
            first = done[0]
            if seen == 0 and first.expected_start_time and first.created:
                # Was the first run planned too late for the worker to claim it early?
                planned_ahead = (first.expected_start_time - first.created).total_seconds()
                started = await running_time(client, first.id)
                late = (started - first.expected_start_time).total_seconds() if started else 0.0
                if planned_ahead < PREFETCH_SECONDS and late > 1:
                    skip_first, wanted = True, runs + 1
                    result.note = (
                        f"first run skipped: planned {planned_ahead:.1f} s before its start "
                        f"(less than the {PREFETCH_SECONDS:.0f} s prefetch), "
                        f"Running {late:.2f} s late"
                    )
                    print(f"  {result.note}")
            seen = len(done)
            print(f"  cron: {min(seen, wanted)}/{wanted} finished ({datetime.now(UTC):%H:%M:%S})")
        if seen >= wanted:
            break
        await asyncio.sleep(2)
    else:
        print(f"  cron: gave up waiting; {seen} of {wanted} finished")
    for run in done[int(skip_first) : wanted]:
        started = await running_time(client, run.id)
        if run.state_type != StateType.COMPLETED or started is None or not run.expected_start_time:
            print(f"  cron run {run.name} ended {run.state_name}; left out")
            continue
        late = (started - run.expected_start_time).total_seconds()
        result.lateness.append(late)
        print(f"  cron run expected {run.expected_start_time:%H:%M:%S}: lateness {late:+.2f} s")
    return result


def seconds(values: list[float], q: float, spec: str) -> str:
    """The q-th percentile of `values` (deployments.stats: nearest rank) formatted, or n/a."""
    value = percentile(values, q)
    return "n/a" if value is None else format(value, spec)


def summary(floor: float, run_now: list[float], cron: CronResult | None) -> None:
    rows = [("floor (import prefect + flow)", f"{floor:.2f} s", "-", "-")]
    if run_now:
        median = statistics.median(run_now)
        rows.append(
            (
                f"run-now -> Running (n={len(run_now)})",
                f"min {min(run_now):.2f} / med {median:.2f} / p95 {seconds(run_now, 95, '.2f')}"
                f" / max {max(run_now):.2f} s",
                "-",
                "-",
            )
        )
        rows.append(
            (
                "  median - floor",
                f"{median - floor:+.2f} s",
                "<= +1.00 s",
                "yes" if median - floor <= 1 else "NO",
            )
        )
    if cron is not None and cron.lateness:
        late = cron.lateness
        p95 = percentile(late, 95)
        rows.append(
            (
                f"cron lateness (n={len(late)})",
                f"p50 {seconds(late, 50, '+.2f')} / p95 {seconds(late, 95, '+.2f')}"
                f" / max {max(late):+.2f} s",
                "p95 <= 1.00 s",
                "yes" if p95 is not None and p95 <= 1 else "NO",
            )
        )
    widths = [
        max(len(row[i]) for row in [("metric", "value", "target", "met"), *rows]) for i in range(4)
    ]
    print()
    for row in [("metric", "value", "target", "met"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))
    if cron is not None and cron.note:
        print(f"note: {cron.note}")


async def run(args: argparse.Namespace) -> None:
    floor = measure_floor()
    with temporary_settings({PREFECT_API_URL: f"{PREFECT_URL}/api"}):
        async with get_client() as client, httpx.AsyncClient(base_url=API_URL, timeout=30) as http:
            print(f"run-now -> Running over {args.runs} runs:")
            run_now = await bench_run_now(http, client, args.runs)
            cron = None
            if not args.skip_cron:
                print(f"cron lateness over {args.cron_runs} runs:")
                cron = await bench_cron(http, client, args.cron_runs)
    summary(floor, run_now, cron)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="run-now runs (default 10)")
    parser.add_argument("--cron-runs", type=int, default=10, help="cron runs (default 10)")
    parser.add_argument("--skip-cron", action="store_true", help="leave out the cron part")
    args = parser.parse_args()
    if not stack_is_up():
        print(f"The stack is not answering ({API_URL}/health, {PREFECT_URL}/api/health).")
        print("Start it in another terminal with `make run`, then run this again.")
        raise SystemExit(2)
    for name in (RUN_NOW, CRON):
        delete_schedule(name)
    try:
        asyncio.run(run(args))
    finally:
        for name in (RUN_NOW, CRON):
            delete_schedule(name)


if __name__ == "__main__":
    main()
