"""`alerts`: Prefect automations that call a webhook about a schedule's runs.

All Prefect: each alert kind is an automation owned by the schedule's deployment, whose action
is Prefect's CallWebhook with a Webhook block (the URL a secret in the block, never on the
deployment) and a Jinja payload Prefect renders with the run, its deployment and its UI link:

- **failed**: a run of the deployment ends Failed, Crashed or TimedOut;
- **late**: Prefect marks a run Late (its late-runs service, 15 s past its time by default);
- **stuck**: a run is still running `stuck_after` after it started (a proactive trigger:
  after Running, no final state within that time): its `timeout_seconds` plus a grace, else
  3x the median duration of its last completed runs, else `ALERT_STUCK_AFTER_SECONDS`;
- **recovered**: a run completes after a failed one (a sequence trigger: Failed, then
  Completed).

The payload is JSON that Slack (`text`) and Discord (`content`) show as a message, with the
fields a program reads beside it: `alert`, `schedule`, and `run` {id, name, state, message,
url}.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Sequence
from datetime import timedelta

from prefect.automations import AutomationCore
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import StateType
from prefect.events.actions import CallWebhook
from prefect.events.schemas.automations import (
    SequenceTrigger,
    TriggerTypes,
)

from deployments.automations import flow_run_trigger, of_deployment
from deployments.prefect_api import read_runs
from deployments.spec import AlertOn
from deployments.views import run_duration

FAILED = ("Failed", "Crashed", "TimedOut")
FINAL = ("Completed", "Failed", "Crashed", "Cancelled", "TimedOut", "AwaitingRetry")
# A run is stuck past this many times the median duration of its schedule's last MEDIAN_OF
# completed runs (with fewer than MIN_HISTORY of them, no median rule).
STUCK_MEDIAN_FACTOR = 3
MEDIAN_OF = 20
MIN_HISTORY = 3
# A run past its timeout gets this long to be failed by its own timeout before it is stuck.
TIMEOUT_GRACE = timedelta(seconds=30)
# Prefect's shortest `within` for a proactive trigger.
MIN_STUCK_AFTER = timedelta(seconds=10)
WHAT = {
    "failed": "a run failed",
    "late": "a run is late",
    "stuck": "a run is stuck",
    "recovered": "runs recovered",
}
# The content type the Webhook block sends the rendered payload with.
JSON_HEADERS = {"Content-Type": "application/json"}


def alert_block_name(schedule: str) -> str:
    """The Webhook block that keeps a schedule's alert URL."""
    return f"sp-alerts-{schedule}"


# The webhook's body: a Jinja template Prefect renders into JSON (each value through tojson).
PAYLOAD = (
    '{% set text = "[scheduled-pipelines] " ~ deployment.name ~ ": @what@ (run " ~ '
    'flow_run.name ~ ", " ~ flow_run.state.name ~ ") " ~ (flow_run|ui_url or "") %}'
    '{"text": {{ text | tojson }}, "content": {{ text | tojson }}, "alert": "@alert@", '
    '"schedule": {{ deployment.name | tojson }}, "run": {'
    '"id": {{ flow_run.id | string | tojson }}, "name": {{ flow_run.name | tojson }}, '
    '"state": {{ flow_run.state.name | tojson }}, '
    '"message": {{ flow_run.state.message | tojson }}, '
    '"url": {{ (flow_run|ui_url) | tojson }}}}'
)


def payload_template(alert: AlertOn) -> str:
    """The webhook's body for one alert kind (see PAYLOAD)."""
    return PAYLOAD.replace("@what@", WHAT[alert]).replace("@alert@", alert)


def _trigger(alert: AlertOn, deployment_id: str, stuck_after: timedelta) -> TriggerTypes:
    runs = of_deployment(deployment_id)
    if alert == "failed":
        return flow_run_trigger(runs, FAILED)
    if alert == "late":
        return flow_run_trigger(runs, ["Late"])
    if alert == "recovered":
        return SequenceTrigger(
            triggers=[flow_run_trigger(runs, FAILED), flow_run_trigger(runs, ["Completed"])]
        )
    within = max(stuck_after, MIN_STUCK_AFTER)
    return flow_run_trigger(runs, FINAL, after=["Running", "Retrying"], within=within)


def alert_automations(
    deployment_id: str,
    name: str,
    on: Sequence[AlertOn],
    block_document_id: str,
    stuck_after: timedelta,
) -> list[AutomationCore]:
    """One automation per alert kind, calling the Webhook block `block_document_id`."""
    return [
        AutomationCore(
            name=f"{name}: alert when {WHAT[alert]}",
            description=f"Calls the alert webhook of schedule {name!r} when {WHAT[alert]}. "
            "Made by scheduled-pipelines.",
            trigger=_trigger(alert, deployment_id, stuck_after),
            actions=[
                CallWebhook(block_document_id=block_document_id, payload=payload_template(alert))
            ],
            owner_resource=f"prefect.deployment.{deployment_id}",
        )
        for alert in on
    ]


def stuck_after(
    timeout_seconds: int | None, median_seconds: float | None, default: int
) -> timedelta:
    """How long a run may run before it is stuck (see the module's docstring)."""
    if timeout_seconds:
        return timedelta(seconds=timeout_seconds) + TIMEOUT_GRACE
    if median_seconds is not None:
        return timedelta(seconds=STUCK_MEDIAN_FACTOR * median_seconds)
    return timedelta(seconds=default)


async def median_duration(client: PrefectClient, deployment_id: uuid.UUID) -> float | None:
    """The median duration of the deployment's last completed runs (None: too few)."""
    runs = await read_runs(client, deployment_id, [StateType.COMPLETED], MEDIAN_OF)
    durations = [d for d in (run_duration(r) for r in runs) if d is not None]
    return statistics.median(durations) if len(durations) >= MIN_HISTORY else None
