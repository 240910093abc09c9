"""The monitor's four lists (the seed job registry's monitor): failed, stuck, stale and late.

Read from Prefect at the moment asked (no copy of ours): a schedule is **failed** when its last
finished run failed or crashed; a run is **stuck** when it has been running past its
schedule's `timeout_seconds`, or past 3x the median duration of its schedule's last completed
runs; a schedule is **stale** when it is active and has had no run for 2x its interval (an
every-5-minutes schedule silent for 10); a run is **late** when it is still waiting for a
worker past its time (Prefect's Late state, or past the grace Prefect gives before marking it).

The rules are plain functions (`stuck_detail`, `stale_since`); `read_monitor` gathers what they
need in a few reads of Prefect, whatever the number of schedules.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterNextScheduledStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.schedules import NoSchedule
from prefect.client.schemas.sorting import FlowRunSort
from pydantic import BaseModel

from deployments.alerts import STUCK_MEDIAN_FACTOR, median_duration
from deployments.job_template import spec_settings_of
from deployments.pipelines import FLOW_TO_PIPELINE
from deployments.prefect_api import PREFECT_PAGE, page_flow_runs, read_runs
from deployments.prefect_schedules import schedule_interval
from deployments.service import pipeline_of
from deployments.views import schedules_active

# A schedule is stale after this many of its intervals without a run.
STALE_FACTOR = 2
# The finished runs read at once to find each schedule's last one (older: read one by one).
RECENT_RUNS = 1000
FAILED_STATES = (StateType.FAILED, StateType.CRASHED)
FINISHED = [StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED]


class MonitorEntry(BaseModel):
    """One schedule (and its run, if any) on one of the lists, and since when."""

    schedule: str
    pipeline: str
    run_id: uuid.UUID | None = None
    state: str | None = None
    since: datetime
    detail: str


class MonitorReport(BaseModel):
    checked_at: datetime
    failed: list[MonitorEntry]
    stuck: list[MonitorEntry]
    stale: list[MonitorEntry]
    late: list[MonitorEntry]


def stuck_detail(
    running_for: float, timeout_seconds: int | None, median_seconds: float | None
) -> str | None:
    """Why a run running for `running_for` s is stuck (None: it is not)."""
    if timeout_seconds and running_for > timeout_seconds:
        return f"running {running_for:.0f} s, past its timeout of {timeout_seconds} s"
    if median_seconds is not None and running_for > STUCK_MEDIAN_FACTOR * median_seconds:
        return (
            f"running {running_for:.0f} s, over {STUCK_MEDIAN_FACTOR}x its median run of "
            f"{median_seconds:.1f} s"
        )
    return None


def stale_since(
    last_run: datetime | None, created: datetime, interval: timedelta | None, now: datetime
) -> datetime | None:
    """Since when a schedule with `interval` between runs has been stale (None: it is not)."""
    if interval is None or interval <= timedelta(0):
        return None
    since = last_run or created
    return since if now - since > STALE_FACTOR * interval else None


async def expected_interval(deployment: DeploymentResponse) -> timedelta | None:
    """The time between two runs of its active schedule (None: manual or once)."""
    active = [s for s in deployment.schedules if s.active]
    if not active or isinstance(active[0].schedule, NoSchedule):
        return None
    return await schedule_interval(active[0].schedule)


async def _our_deployments(client: PrefectClient) -> list[DeploymentResponse]:
    flows = FlowFilter(name=FlowFilterName(any_=list(FLOW_TO_PIPELINE)))
    found: list[DeploymentResponse] = []
    while True:
        page = await client.read_deployments(
            flow_filter=flows, limit=PREFECT_PAGE, offset=len(found)
        )
        found += page
        if len(page) < PREFECT_PAGE:
            return found


async def _runs(
    client: PrefectClient,
    ids: list[uuid.UUID],
    run_filter: FlowRunFilter,
    sort: FlowRunSort,
    limit: int,
) -> list[FlowRun]:
    by_deployment = DeploymentFilter(id=DeploymentFilterId(any_=ids))
    return await page_flow_runs(
        client, limit, sort, deployment_filter=by_deployment, flow_run_filter=run_filter
    )


def _in(states: Sequence[StateType]) -> FlowRunFilter:
    return FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=list(states))))


async def read_monitor(
    client: PrefectClient, now: datetime, late_after: timedelta
) -> MonitorReport:
    """The four lists as Prefect has them at `now`; runs late past `late_after`."""
    deployments = {d.id: d for d in await _our_deployments(client)}
    report = MonitorReport(checked_at=now, failed=[], stuck=[], stale=[], late=[])
    if not deployments:
        return report
    ids = list(deployments)

    def entry(
        run: FlowRun | None, deployment: DeploymentResponse, since: datetime, detail: str
    ) -> MonitorEntry:
        return MonitorEntry(
            schedule=deployment.name,
            pipeline=pipeline_of(deployment).name,
            run_id=run.id if run else None,
            state=run.state_name if run else None,
            since=since,
            detail=detail,
        )

    running, finished, waiting = await asyncio.gather(
        _runs(client, ids, _in([StateType.RUNNING]), FlowRunSort.START_TIME_DESC, RECENT_RUNS),
        _runs(client, ids, _in(FINISHED), FlowRunSort.END_TIME_DESC, RECENT_RUNS),
        _runs(
            client,
            ids,
            FlowRunFilter(
                state=FlowRunFilterState(
                    type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])
                ),
                next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(
                    before_=now - late_after
                ),
            ),
            FlowRunSort.NEXT_SCHEDULED_START_TIME_ASC,
            RECENT_RUNS,
        ),
    )
    last_finished: dict[uuid.UUID, FlowRun] = {}
    for run in finished:
        if run.deployment_id is not None:
            last_finished.setdefault(run.deployment_id, run)
    for deployment_id, run in last_finished.items():
        if run.state_type in FAILED_STATES:
            since = run.end_time or run.expected_start_time or now
            message = run.state.message if run.state else None
            detail = message or f"last run {run.state_name}"
            report.failed.append(entry(run, deployments[deployment_id], since, detail[:500]))

    for run in running:
        deployment = deployments.get(run.deployment_id) if run.deployment_id else None
        if deployment is None or run.start_time is None:
            continue
        running_for = (now - run.start_time).total_seconds()
        timeout = spec_settings_of(deployment.job_variables).get("timeout_seconds")
        median = await median_duration(client, deployment.id) if not timeout else None
        why = stuck_detail(running_for, timeout, median)
        if why:
            report.stuck.append(entry(run, deployment, run.start_time, why))

    for run in waiting:
        deployment = deployments.get(run.deployment_id) if run.deployment_id else None
        due = run.next_scheduled_start_time or run.expected_start_time
        if deployment is None or due is None:
            continue
        waited = f"due {(now - due).total_seconds():.0f} s ago, not started ({run.state_name})"
        report.late.append(entry(run, deployment, due, waited))

    latest_start = {r.deployment_id: r.start_time for r in running if r.deployment_id}
    for deployment in deployments.values():
        if deployment.paused or not schedules_active(deployment):
            continue
        interval = await expected_interval(deployment)
        if interval is None:
            continue
        ended = last_finished.get(deployment.id)
        last = latest_start.get(deployment.id) or (_ran_at(ended) if ended else None)
        if last is None and len(finished) >= RECENT_RUNS:
            older = await read_runs(client, deployment.id, FINISHED, 1)
            last = _ran_at(older[0]) if older else None
        silent = stale_since(last, deployment.created or now, interval, now)
        if silent is not None:
            quiet = (
                f"no run for {(now - silent).total_seconds():.0f} s; it runs every "
                f"{interval.total_seconds():.0f} s"
            )
            report.stale.append(entry(None, deployment, silent, quiet))
    return report


def _ran_at(run: FlowRun) -> datetime | None:
    return run.start_time or run.end_time or run.expected_start_time
