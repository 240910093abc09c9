"""Catch-up while no worker runs: Prefect automations that have our API end missed runs.

Our warm worker applies a schedule's catch-up policy when it claims a run (deployments/
controls.py): that covers a worker coming back to a backlog. Until one comes, Prefect's
pieces watch: its late-runs service marks a run Late (PREFECT_SERVER_SERVICES_LATE_RUNS_AFTER_
SECONDS past its time, 15 s by default), and a proactive automation per schedule waits, after
each Late run, for a worker to take it (Pending, Running or any final state). When none has
within the time below, the automation calls our API (`POST /api/runs/catch-up`, Prefect's
CallWebhook with the `sp-catchup-callback` Webhook block), which applies the very decision
the worker would (`decide_for_run`): Cancelled "Missed" under `none`, "Superseded" under
`latest` when a newer run is due, nothing for a run made after its time (a backfill) or
started by hand. Prefect's own ChangeFlowRunState action cannot tell those apart, hence the
call. The time waited:

- `none`: until `window_seconds` after its time;
- `latest`: until the next run is due too (one interval after its time, at least
  `window_seconds`).

Prefect's shortest proactive window is 10 s, so a run is ended at the earliest 10 s after it
went Late. `all` (Prefect's behaviour) needs no automation. Runs that went Late while our API
was down are caught up when it starts (`api.main`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from prefect.automations import AutomationCore
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterDeploymentId,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.events.actions import CallWebhook

from deployments.automations import flow_run_trigger, of_deployment
from deployments.controls import (
    RUN,
    ClaimedRun,
    Decision,
    RunControls,
    decide,
    is_late,
)
from deployments.spec import Catchup

# The Webhook block automations call our API with, the route, and the body Prefect renders.
CALLBACK_BLOCK = "sp-catchup-callback"
CALLBACK_PATH = "/api/runs/catch-up"
CALLBACK_PAYLOAD = (
    '{"flow_run_id": {{ event.resource.id | replace("prefect.flow-run.", "") | tojson }}}'
)
# What shows a worker took a Late run (or someone ended it).
TAKEN = ("Pending", "Running", "Completed", "Failed", "Crashed", "Cancelled", "Cancelling")
MIN_WITHIN = timedelta(seconds=10)


def catchup_within(
    catchup: Catchup, interval: timedelta | None, late_after: timedelta
) -> timedelta | None:
    """How long after going Late a run not taken is ended (None: the policy ends none)."""
    window = timedelta(seconds=catchup.window_seconds)
    if catchup.policy == "none":
        wait = window
    elif catchup.policy == "latest" and interval is not None:
        wait = max(interval, window)
    else:
        return None
    return max(wait - late_after, MIN_WITHIN)


def catchup_automations(
    deployment_id: str,
    name: str,
    catchup: Catchup,
    interval: timedelta | None,
    late_after: timedelta,
    callback_block_id: str,
) -> list[AutomationCore]:
    """The schedule's catch-up automation, if its policy ends runs; it calls our API through
    the Webhook block `callback_block_id`."""
    within = catchup_within(catchup, interval, late_after)
    if within is None:
        return []
    return [
        AutomationCore(
            name=f"{name}: catch-up {catchup.policy}",
            description=f"Ends runs of {name!r} missed while no worker ran (catch-up: "
            f"{catchup.policy}). Made by scheduled-pipelines.",
            trigger=flow_run_trigger(
                of_deployment(deployment_id), TAKEN, after=["Late"], within=within
            ),
            actions=[CallWebhook(block_document_id=callback_block_id, payload=CALLBACK_PAYLOAD)],
            owner_resource=f"prefect.deployment.{deployment_id}",
        )
    ]


async def decide_for_run(
    client: PrefectClient, flow_run: FlowRun, controls: RunControls, now: datetime | None = None
) -> Decision:
    """What the schedule's controls say to do with `flow_run` now (deployments/controls.py's
    `decide`, given what it needs from Prefect): the worker asks when it claims a run, our
    API when Prefect says a run went Late (`catch_up`)."""
    if not controls.decides:
        return RUN
    now = now or datetime.now(UTC)
    # The time it is due now: Prefect's column of its Scheduled state's time (the runs a
    # worker polls for come without their state).
    scheduled = flow_run.next_scheduled_start_time or flow_run.expected_start_time or now
    run = ClaimedRun(
        id=flow_run.id,
        expected=flow_run.expected_start_time or scheduled,
        scheduled=scheduled,
        tags=tuple(flow_run.tags),
        created=flow_run.created,
    )
    newer_due = False
    if controls.catchup.policy == "latest" and is_late(controls, run, now):
        newer_due = await _newer_run_due(client, flow_run, run.expected, now)
    return decide(controls, run, now, newer_due)


async def _newer_run_due(
    client: PrefectClient, flow_run: FlowRun, expected: datetime, now: datetime
) -> bool:
    """True when another run of the deployment, due after this one, is due by now."""
    if flow_run.deployment_id is None:
        return False
    newer = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(not_any_=[flow_run.id]),
            deployment_id=FlowRunFilterDeploymentId(any_=[flow_run.deployment_id]),
            expected_start_time=FlowRunFilterExpectedStartTime(
                after_=expected + timedelta(microseconds=1), before_=now
            ),
            state=FlowRunFilterState(type=FlowRunFilterStateType(not_any_=[StateType.CANCELLED])),
        ),
        limit=1,
    )
    return bool(newer)
