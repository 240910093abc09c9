"""Runs whose process vanished end Crashed: Prefect's heartbeats and its zombie-run automation.

A worker catches its own run's process dying (the exit code) and marks the run Crashed. When
the worker's host dies too (a SIGKILL of the whole group, a lost VM, an OOM kill of the
worker), nobody is left to say so: the run stays Running and holds a slot of the pool's
concurrency limit for ever. Prefect's documented answer ("detect zombie flows") is what we
use, not our own: every flow run emits a `prefect.flow-run.heartbeat` event every
`HEARTBEAT_SECONDS` (our pool's job template sets PREFECT_FLOWS_HEARTBEAT_FREQUENCY for every
run, from either worker type), and a proactive automation marks a run Crashed when, after a
heartbeat, neither another heartbeat nor a final state comes within `MISSED_HEARTBEATS`
intervals. Crashed frees the slot; a deployment's flow retries do not re-run a crash (as for
any crash in Prefect).

Heartbeats come from the run's own process, so a run still Pending when its worker died
(no process yet) is not covered; Prefect's late-run view shows those.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from prefect.automations import AutomationCore
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import StateType
from prefect.events.actions import ChangeFlowRunState
from prefect.events.schemas.automations import EventTrigger, Posture
from prefect.events.schemas.events import ResourceSpecification

from deployments.job_template import HEARTBEAT_SECONDS

NAME = "crash-unresponsive-runs"
# Heartbeats a run may miss before it is called Crashed: one late heartbeat on a loaded host
# is not a crash.
MISSED_HEARTBEATS = 3
FINAL = ("Completed", "Failed", "Cancelled", "Crashed")
MESSAGE = "No heartbeat from the run's process for {seconds:.0f}s: its worker or host died."


def of_deployment(deployment_id: str) -> ResourceSpecification:
    """Related resources naming one deployment (the runs of that deployment)."""
    return ResourceSpecification(
        {
            "prefect.resource.id": f"prefect.deployment.{deployment_id}",
            "prefect.resource.role": "deployment",
        }
    )


def flow_run_trigger(
    related: ResourceSpecification | list[ResourceSpecification],
    expect: Iterable[str],
    *,
    after: Iterable[str] = (),
    within: timedelta = timedelta(0),
) -> EventTrigger:
    """A trigger on flow-run events (`expect`, `after`: the part after `prefect.flow-run.`,
    state names or `heartbeat`) of the runs `related` matches: reactive, once per event; or,
    with `after`, proactive per run: it fires when, after one of `after`, none of `expect`
    comes within `within`."""
    events = {f"prefect.flow-run.{name}" for name in expect}
    proactive = bool(after)
    return EventTrigger(
        match=ResourceSpecification({"prefect.resource.id": "prefect.flow-run.*"}),
        match_related=related,
        after={f"prefect.flow-run.{name}" for name in after},
        expect=events,
        for_each={"prefect.resource.id"} if proactive else set(),
        posture=Posture.Proactive if proactive else Posture.Reactive,
        threshold=1,
        within=within,
    )


def unresponsive_runs_automation(
    within: timedelta = timedelta(seconds=MISSED_HEARTBEATS * HEARTBEAT_SECONDS),
    *,
    name: str = NAME,
    deployment_id: str | None = None,
) -> AutomationCore:
    """Prefect's zombie-run automation: after a run's heartbeat, another heartbeat or a
    final state within `within`, else the run is set Crashed. `deployment_id` narrows it to
    one deployment's runs (the end-to-end test's own)."""
    related = of_deployment(deployment_id) if deployment_id else ResourceSpecification({})
    return AutomationCore(
        name=name,
        description=(
            "Marks a flow run Crashed when its heartbeats stop (its worker or host died), "
            "so it frees its work-pool slot. Made by scheduled-pipelines."
        ),
        trigger=flow_run_trigger(
            related, ["heartbeat", *FINAL], after=["heartbeat"], within=within
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=MESSAGE.format(seconds=within.total_seconds()),
            )
        ],
    )


async def ensure_automation(client: PrefectClient, automation: AutomationCore) -> None:
    """Create `automation`, or bring the one of its name to it (idempotent); duplicates of
    the name (made by hand, or by two stacks at once) are removed."""
    found = await client.read_automations_by_name(automation.name)
    if not found:
        await client.create_automation(automation)
        return
    first, *others = found
    wanted = automation.model_dump(mode="json")
    if AutomationCore.model_validate(first.model_dump()).model_dump(mode="json") != wanted:
        await client.update_automation(first.id, automation)
    for other in others:
        await client.delete_automation(other.id)


async def _ensure_default() -> None:
    from prefect import get_client

    async with get_client() as client:
        await ensure_automation(client, unresponsive_runs_automation())


if __name__ == "__main__":  # `python -m deployments.automations`: against PREFECT_API_URL
    import asyncio

    asyncio.run(_ensure_default())
    print(f"automation {NAME!r} is in place")
