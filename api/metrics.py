"""`GET /metrics`: the schedules' runs, items and our API's requests, in Prometheus's format.

Runs happen in the worker's processes, not here, so run metrics are read from Prefect, which
has every run: at each scrape, the runs of our schedules that started or finished since the
last one (a few reads, whatever the number of schedules), counted into prometheus-client's
counters and histograms. They count from this process's start, as counters do; with several
API replicas, scrape one (each counts the same runs). Items come from our run outcomes table
(totals, the same from every replica). Requests are counted as they are answered (the access
log middleware hands each over, api/access_log.py).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime, timedelta

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterEndTime,
    FlowRunFilterNextScheduledStartTime,
    FlowRunFilterStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine
from sqlmodel import Session

from db.crud import item_totals_by_schedule
from deployments.pipelines import FLOW_TO_PIPELINE
from deployments.prefect_api import page_flow_runs
from deployments.service import pipeline_of

DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)
LATENESS_BUCKETS = (0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900)
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
# Runs read again from this far before the last scrape (a run's end written just after a read
# is still counted), each counted once (the ids seen in that span are kept).
OVERLAP = timedelta(seconds=30)
# At most this many started or finished runs counted per scrape (the rest at the next one).
MAX_RUNS_PER_SCRAPE = 5000


class RunMetrics:
    """The run counters and histograms, brought up to date from Prefect at each scrape."""

    def __init__(self, registry: CollectorRegistry, since: datetime | None = None):
        labels = ["schedule", "pipeline"]
        self.started = Counter(
            "sp_runs_started", "Flow runs of our schedules that started", labels, registry=registry
        )
        self.finished = Counter(
            "sp_runs_finished",
            "Flow runs of our schedules that reached a final state, by state",
            [*labels, "state"],
            registry=registry,
        )
        self.duration = Histogram(
            "sp_run_duration_seconds",
            "Seconds from start to end of finished runs",
            labels,
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        self.lateness = Histogram(
            "sp_run_lateness_seconds",
            "Seconds from the time a run was due to its start",
            labels,
            buckets=LATENESS_BUCKETS,
            registry=registry,
        )
        self.queued = Gauge(
            "sp_runs_queued",
            "Runs of our schedules waiting to start: scheduled (not yet due) and late (due)",
            ["state"],
            registry=registry,
        )
        self.since = since or datetime.now(UTC)
        self._seen: dict[tuple[str, uuid.UUID], datetime] = {}
        self._names: dict[uuid.UUID, tuple[str, str]] = {}

    async def refresh(self, client: PrefectClient, now: datetime | None = None) -> None:
        now = now or datetime.now(UTC)
        after = self.since - OVERLAP
        ours = FlowFilter(name=FlowFilterName(any_=list(FLOW_TO_PIPELINE)))
        started = await _runs(
            client, ours, FlowRunFilter(start_time=FlowRunFilterStartTime(after_=after))
        )
        finished = await _runs(
            client,
            ours,
            FlowRunFilter(
                end_time=FlowRunFilterEndTime(after_=after),
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(
                        any_=[
                            StateType.COMPLETED,
                            StateType.FAILED,
                            StateType.CRASHED,
                            StateType.CANCELLED,
                        ]
                    )
                ),
            ),
        )
        await self._learn_names(client, [*started, *finished])
        for run in started:
            if run.start_time and self._first_time("started", run, run.start_time):
                labels = self._labels(run)
                self.started.labels(*labels).inc()
                due = run.next_scheduled_start_time or run.expected_start_time
                if due is not None:
                    late = max(0.0, (run.start_time - due).total_seconds())
                    self.lateness.labels(*labels).observe(late)
        for run in finished:
            if run.end_time and self._first_time("finished", run, run.end_time):
                labels = self._labels(run)
                state = run.state_name or (run.state_type.value if run.state_type else "")
                self.finished.labels(*labels, state).inc()
                if run.start_time:
                    seconds = (run.end_time - run.start_time).total_seconds()
                    self.duration.labels(*labels).observe(max(0.0, seconds))
        await self._count_queued(client, ours, now)
        self.since = now
        self._seen = {k: t for k, t in self._seen.items() if t > now - 2 * OVERLAP}

    def _first_time(self, what: str, run: FlowRun, at: datetime) -> bool:
        """True the first time a run is seen to have started (or finished) since `since`."""
        if (what, run.id) in self._seen or at <= self.since - OVERLAP:
            return False
        self._seen[(what, run.id)] = at
        return True

    def _labels(self, run: FlowRun) -> tuple[str, str]:
        if run.deployment_id is None:
            return ("", "")
        return self._names.get(run.deployment_id, (str(run.deployment_id), ""))

    async def _learn_names(self, client: PrefectClient, runs: Iterable[FlowRun]) -> None:
        unknown = {r.deployment_id for r in runs if r.deployment_id} - set(self._names)
        if not unknown:
            return
        found = await client.read_deployments(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=list(unknown))),
            limit=len(unknown),
        )
        for deployment in found:
            self._names[deployment.id] = (deployment.name, pipeline_of(deployment).name)

    async def _count_queued(self, client: PrefectClient, ours: FlowFilter, now: datetime) -> None:
        waiting = FlowRunFilterState(
            type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])
        )
        ran_by_deployment = FlowRunFilterDeploymentId(is_null_=False)
        for state, when in (
            ("late", FlowRunFilterNextScheduledStartTime(before_=now)),
            ("scheduled", FlowRunFilterNextScheduledStartTime(after_=now)),
        ):
            count = await client.count_flow_runs(
                flow_filter=ours,
                flow_run_filter=FlowRunFilter(
                    state=waiting, next_scheduled_start_time=when, deployment_id=ran_by_deployment
                ),
            )
            self.queued.labels(state).set(count)


async def _runs(
    client: PrefectClient, ours: FlowFilter, run_filter: FlowRunFilter
) -> list[FlowRun]:
    return await page_flow_runs(
        client,
        MAX_RUNS_PER_SCRAPE,
        FlowRunSort.EXPECTED_START_TIME_ASC,
        flow_filter=ours,
        flow_run_filter=run_filter,
    )


class ItemTotals(Collector):
    """Items processed and failed per schedule: sums of our run outcomes table at scrape time."""

    def __init__(self, engine: Engine):
        self.engine = engine

    def collect(self) -> Iterator[Metric]:
        processed = CounterMetricFamily(
            "sp_items_processed", "Items our flows processed", labels=["schedule", "pipeline"]
        )
        failed = CounterMetricFamily(
            "sp_items_failed", "Items our flows failed to process", labels=["schedule", "pipeline"]
        )
        with Session(self.engine) as session:
            for schedule, pipeline, done, bad in item_totals_by_schedule(session):
                processed.add_metric([schedule, pipeline], float(done))
                failed.add_metric([schedule, pipeline], float(bad))
        yield processed
        yield failed

    def describe(self) -> Iterable[Metric]:
        return []  # collected at scrape time only (the database may be missing at start)


class ApiMetrics:
    """Everything `/metrics` answers, in one registry per app."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.runs = RunMetrics(self.registry)
        self.requests = Counter(
            "sp_api_requests",
            "Requests our API answered",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "sp_api_request_duration_seconds",
            "Seconds our API took to answer",
            ["method", "route"],
            buckets=REQUEST_BUCKETS,
            registry=self.registry,
        )
        self._items: ItemTotals | None = None
        self._refreshing = asyncio.Lock()

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request (api/access_log.py hands each over)."""
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def count_items_of(self, engine: Engine) -> None:
        """Add the item totals of `engine`'s run outcomes (once the app has its database)."""
        if self._items is None:
            self._items = ItemTotals(engine)
            self.registry.register(self._items)

    async def exposition(self, client: PrefectClient) -> bytes:
        """The metrics as Prometheus's text format, run metrics read from Prefect first (one
        scrape's reads at a time: two at once would read the same runs twice)."""
        async with self._refreshing:
            await self.runs.refresh(client)
        return generate_latest(self.registry)
