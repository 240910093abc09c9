"""`depends_on`: a schedule that runs after others, as Prefect deployment triggers.

Prefect has the piece: a deployment trigger is an automation, owned by the deployment it runs,
whose action is "run this deployment" (RunDeployment) when events match. A schedule that
depends on one other runs after *each* of its Completed runs (an event trigger on that
deployment's `prefect.flow-run.Completed`); one that depends on several runs once all of them
have completed since its last trigger (one compound trigger, `require: all`, whose child
firings Prefect keeps until the last one comes).

Prefect lacks the other half: "the dependency failed, so this one is not run". For that, each
dependency has a second automation: on its Failed, Crashed or TimedOut run (or its own
DEPENDENCY_FAILED, so a failure propagates down a chain) it makes a run of this schedule
that carries `controls.dependency_failed`, and our warm worker ends that run Cancelled as
DEPENDENCY_FAILED without starting it (deployments/controls.py), so the schedule's history
says why it did not run.

Triggers match a dependency by its deployment's name among our flows (names are unique
among our schedules), so a dependency deleted and made again is still followed. Cycles are
refused when a schedule is created or changed (`find_cycle`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prefect.automations import AutomationCore
from prefect.events.actions import RunDeployment
from prefect.events.schemas.automations import (
    CompoundTrigger,
    EventTrigger,
    TriggerTypes,
)
from prefect.events.schemas.events import ResourceSpecification

from deployments.automations import flow_run_trigger
from deployments.controls import DEPENDENCY_FAILED
from deployments.job_template import CONTROLS

# The run of a dependency ended without completing: Prefect's state names, as event names.
FAILED_STATES = ("Failed", "Crashed", "TimedOut", DEPENDENCY_FAILED)
# The key of the `controls` variable a dependency-failed run carries (RunControls), set to the
# dependency's name.
FAILED_KEY = "dependency_failed"


def find_cycle(
    name: str, depends_on: Sequence[str], graph: Mapping[str, Sequence[str]]
) -> list[str] | None:
    """The path back to `name` if it depended on `depends_on` (None: no cycle).

    `graph` holds each other schedule's dependencies (missing names have none)."""
    stack: list[tuple[str, list[str]]] = [(dep, [name, dep]) for dep in depends_on]
    seen: set[str] = set()
    while stack:
        node, path = stack.pop()
        if node == name:
            return path
        if node in seen:
            continue
        seen.add(node)
        stack.extend((nxt, [*path, nxt]) for nxt in graph.get(node, ()))
    return None


def _runs_of(dependency: str, flows: Sequence[str], states: Sequence[str]) -> EventTrigger:
    """A trigger on each run of schedule `dependency` (one of `flows`) reaching `states`."""
    related = [
        ResourceSpecification(
            {"prefect.resource.role": "deployment", "prefect.resource.name": dependency}
        ),
        ResourceSpecification(
            {"prefect.resource.role": "flow", "prefect.resource.name": list(flows)}
        ),
    ]
    return flow_run_trigger(related, states)


def dependency_automations(
    deployment_id: str, name: str, depends_on: Sequence[str], flows: Sequence[str]
) -> list[AutomationCore]:
    """The automations that make `name` (deployment `deployment_id`) follow `depends_on`.

    `flows` are our flows' names (what a dependency's runs are runs of)."""
    if not depends_on:
        return []
    owner = f"prefect.deployment.{deployment_id}"
    completed: TriggerTypes = (
        _runs_of(depends_on[0], flows, ["Completed"])
        if len(depends_on) == 1
        else CompoundTrigger(
            require="all", triggers=[_runs_of(d, flows, ["Completed"]) for d in depends_on]
        )
    )
    after = AutomationCore(
        name=f"{name}: after {' and '.join(depends_on)}",
        description=f"Runs schedule {name!r} once {', '.join(depends_on)} completed "
        "(depends_on). Made by scheduled-pipelines.",
        trigger=completed,
        actions=[RunDeployment(source="selected", deployment_id=deployment_id)],
        owner_resource=owner,
    )
    failed = [
        AutomationCore(
            name=f"{name}: {DEPENDENCY_FAILED} when {dependency} fails",
            description=f"Records a {DEPENDENCY_FAILED} run of {name!r} when a run of "
            f"{dependency!r} fails. Made by scheduled-pipelines.",
            trigger=_runs_of(dependency, flows, FAILED_STATES),
            actions=[
                RunDeployment(
                    source="selected",
                    deployment_id=deployment_id,
                    job_variables={CONTROLS: {FAILED_KEY: dependency}},
                )
            ],
            owner_resource=owner,
        )
        for dependency in depends_on
    ]
    return [after, *failed]
