"""The pure rules of alerts, the monitor and catch-up automations."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

from jinja2.sandbox import ImmutableSandboxedEnvironment
from prefect.events.schemas.automations import EventTrigger, SequenceTrigger

from deployments.alerts import alert_automations, payload_template, stuck_after
from deployments.catchup import CALLBACK_PAYLOAD, catchup_automations, catchup_within
from deployments.monitor import stale_since, stuck_detail
from deployments.spec import AlertOn, Catchup

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def render(template: str, **context: object) -> object:
    """A payload as Prefect renders it (Jinja, with its `ui_url` filter), parsed as JSON."""
    env = ImmutableSandboxedEnvironment()
    env.filters["ui_url"] = lambda obj: f"http://ui/runs/flow-run/{obj.id}"
    return json.loads(env.from_string(template).render(**context))


def test_the_alert_payload_is_json_for_slack_discord_and_programs() -> None:
    run = SimpleNamespace(
        id=uuid.uuid4(),
        name="brave-otter",
        state=SimpleNamespace(name="Failed", message='boom "quoted"\nline'),
    )
    body = render(payload_template("failed"), flow_run=run, deployment=SimpleNamespace(name="b"))
    assert isinstance(body, dict)
    assert body["alert"] == "failed" and body["schedule"] == "b"
    assert body["text"] == body["content"]
    assert "b: a run failed (run brave-otter, Failed)" in body["text"]
    assert body["run"] == {
        "id": str(run.id),
        "name": "brave-otter",
        "state": "Failed",
        "message": 'boom "quoted"\nline',
        "url": f"http://ui/runs/flow-run/{run.id}",
    }


def test_the_catch_up_callback_names_the_run() -> None:
    event = SimpleNamespace(resource=SimpleNamespace(id="prefect.flow-run.abc"))
    assert render(CALLBACK_PAYLOAD, event=event) == {"flow_run_id": "abc"}


def test_stuck_is_past_the_timeout_else_three_medians_else_the_default() -> None:
    assert stuck_after(60, 5.0, 3600) == timedelta(seconds=90)  # timeout + grace
    assert stuck_after(None, 5.0, 3600) == timedelta(seconds=15)
    assert stuck_after(None, None, 3600) == timedelta(seconds=3600)
    assert stuck_detail(61, 60, None) is not None and stuck_detail(59, 60, None) is None
    assert "median" in (stuck_detail(16, None, 5.0) or "")
    assert stuck_detail(14, None, 5.0) is None and stuck_detail(10_000, None, None) is None


def test_stale_is_two_intervals_without_a_run() -> None:
    minute = timedelta(minutes=1)
    created = NOW - timedelta(days=1)
    assert stale_since(NOW - 3 * minute, created, minute, NOW) == NOW - 3 * minute
    assert stale_since(NOW - minute, created, minute, NOW) is None
    assert stale_since(None, created, minute, NOW) == created  # never ran
    assert stale_since(None, created, None, NOW) is None  # manual or once


def test_each_alert_kind_is_one_automation_of_the_deployment() -> None:
    deployment_id = str(uuid.uuid4())
    kinds: list[AlertOn] = ["failed", "late", "stuck", "recovered"]
    found = alert_automations(deployment_id, "s", kinds, str(uuid.uuid4()), timedelta(seconds=5))
    assert [a.owner_resource for a in found] == [f"prefect.deployment.{deployment_id}"] * 4
    failed, late, stuck, recovered = (a.trigger for a in found)
    assert isinstance(failed, EventTrigger) and "prefect.flow-run.Crashed" in failed.expect
    assert isinstance(late, EventTrigger) and late.expect == {"prefect.flow-run.Late"}
    assert isinstance(stuck, EventTrigger) and stuck.posture == "Proactive"
    assert stuck.within == timedelta(seconds=10)  # Prefect's shortest proactive window
    assert isinstance(recovered, SequenceTrigger) and len(recovered.triggers) == 2


def test_catch_up_waits_for_the_window_or_the_next_run() -> None:
    late_after = timedelta(seconds=15)
    minute = timedelta(minutes=1)
    none = Catchup(policy="none", window_seconds=120)
    assert catchup_within(none, minute, late_after) == timedelta(seconds=105)
    assert catchup_within(Catchup(policy="none", window_seconds=0), None, late_after) == timedelta(
        seconds=10
    )
    latest = Catchup(policy="latest", window_seconds=30)
    assert catchup_within(latest, 5 * minute, late_after) == timedelta(seconds=285)
    assert catchup_within(latest, None, late_after) is None  # no next run ever comes
    assert catchup_within(Catchup(), minute, late_after) is None
    block = str(uuid.uuid4())
    assert catchup_automations("d", "s", Catchup(), minute, late_after, block) == []
    (automation,) = catchup_automations("d", "s", none, minute, late_after, block)
    assert automation.trigger.after == {"prefect.flow-run.Late"}  # type: ignore[union-attr]
