"""depends_on's pure parts: cycles, and the automations a schedule's dependencies become."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from prefect.events.actions import RunDeployment
from prefect.events.schemas.automations import CompoundTrigger, EventTrigger
from prefect.events.schemas.events import ResourceSpecification

from deployments.controls import ClaimedRun, RunControls, decide
from deployments.dependencies import FAILED_KEY, dependency_automations, find_cycle

FLOWS = ["api-call", "crew"]


def test_find_cycle_names_the_path_back() -> None:
    graph = {"b": ["a"], "c": ["b"]}
    assert find_cycle("a", ["c"], graph) == ["a", "c", "b", "a"]
    assert find_cycle("d", ["b", "c"], graph) is None
    assert find_cycle("a", ["a"], {}) == ["a", "a"]
    # A diamond is no cycle; unknown names have no dependencies.
    assert find_cycle("e", ["c", "b", "gone"], {"c": ["b", "a"], "b": ["a"]}) is None


def test_one_dependency_is_one_event_trigger_and_one_failure_automation() -> None:
    deployment_id = str(uuid.uuid4())
    after, failed = dependency_automations(deployment_id, "b", ["a"], FLOWS)
    assert isinstance(after.trigger, EventTrigger)
    assert after.trigger.expect == {"prefect.flow-run.Completed"}
    related = after.trigger.match_related
    assert isinstance(related, list)
    named = {"prefect.resource.role": "deployment", "prefect.resource.name": "a"}
    assert related[0] == ResourceSpecification(named)
    assert after.owner_resource == f"prefect.deployment.{deployment_id}"
    action = after.actions[0]
    assert isinstance(action, RunDeployment) and str(action.deployment_id) == deployment_id
    assert action.job_variables is None
    assert isinstance(failed.trigger, EventTrigger)
    assert "prefect.flow-run.Failed" in failed.trigger.expect
    assert "prefect.flow-run.DEPENDENCY_FAILED" in failed.trigger.expect  # it propagates
    failing = failed.actions[0]
    assert isinstance(failing, RunDeployment)
    assert failing.job_variables == {"controls": {FAILED_KEY: "a"}}


def test_several_dependencies_are_one_compound_trigger_requiring_all() -> None:
    after, *failed = dependency_automations(str(uuid.uuid4()), "d", ["b", "c"], FLOWS)
    assert isinstance(after.trigger, CompoundTrigger)
    assert after.trigger.require == "all" and len(after.trigger.triggers) == 2
    assert after.trigger.within is None  # each completion counts until the other comes
    assert len(failed) == 2
    assert dependency_automations(str(uuid.uuid4()), "x", [], FLOWS) == []


def test_a_dependency_failed_run_is_cancelled_with_the_reason() -> None:
    now = datetime.now(UTC)
    run = ClaimedRun(id=uuid.uuid4(), expected=now, scheduled=now)
    decision = decide(RunControls(dependency_failed="a"), run, now)
    assert (decision.action, decision.name) == ("cancel", "DEPENDENCY_FAILED")
    assert "'a'" in decision.reason
    assert RunControls.model_validate({"depends_on": ["a"]}).decides is False
