"""`alerts` on a real Prefect server and worker: Prefect's automations call a local webhook."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from prefect import get_client
from prefect.states import Cancelled, Late, Running, Scheduled
from prefect.utilities.asyncutils import run_coro_as_sync

from settings import get_settings
from tests.utils.factories import api_call_spec
from tests.utils.http_source import PRICES, HttpSource, Reply, serve_http_source
from tests.utils.runs import wait_for_run, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def source() -> Iterator[HttpSource]:
    with serve_http_source() as source:
        # Fails once, then answers: a failed run, then a recovered one.
        source.route("/flaky", Reply(500, {"error": "down"}), Reply(200, PRICES))
        yield source


def calls(source: HttpSource, hook: str) -> list[dict[str, Any]]:
    return [json.loads(r["body"]) for r in list(source.requests) if r["path"] == hook]


def schedule(api: TestClient, source: HttpSource, hook: str, **fields: Any) -> dict[str, Any]:
    name = f"alert-{uuid.uuid4().hex[:8]}"
    spec = api_call_spec(name, source.url, "/flaky", **fields)
    spec["parameters"]["request"].update(retries=0, timeout_seconds=15)
    source.route(hook, Reply(200, {"ok": True}))
    spec["alerts"] = {**spec.get("alerts", {}), "webhook": f"{source.url}{hook}"}
    answer = api.post("/api/schedules", json=spec)
    assert answer.status_code == 201, answer.text
    return dict(answer.json())


def test_a_failed_run_then_a_recovered_one_call_the_webhook_once_each(
    api: TestClient, worker: Any, source: HttpSource, prefect_api_url: str
) -> None:
    hook = f"/hook-{uuid.uuid4().hex[:6]}"
    view = schedule(api, source, hook, alerts={"on": ["failed", "recovered"]})
    name = view["name"]
    # The URL is kept in a Prefect Webhook block (a secret), not on the deployment.
    assert view["alerts"] == {
        "on": ["failed", "recovered"],
        "webhook": None,
        "block": f"sp-alerts-{name}",
    }
    deployment = httpx.get(f"{prefect_api_url}/deployments/{view['deployment_id']}").json()
    assert hook not in json.dumps(deployment)

    failed = api.post(f"/api/schedules/{name}/run").json()["flow_run_id"]
    assert wait_for_run(api, failed)["state_type"] == "FAILED"
    first = wait_until(lambda: calls(source, hook), "the failed alert", 60, 0.5)[0]
    assert first["alert"] == "failed" and first["schedule"] == name
    assert first["run"]["id"] == failed and first["run"]["state"] == "Failed"
    assert name in first["text"] and first["content"] == first["text"]
    assert "url" in first["run"]

    recovered = api.post(f"/api/schedules/{name}/run").json()["flow_run_id"]
    assert wait_for_run(api, recovered)["state_type"] == "COMPLETED"
    wait_until(lambda: len(calls(source, hook)) >= 2, "the recovered alert", 60, 0.5)
    time.sleep(3)  # nothing more comes
    found = calls(source, hook)
    assert [c["alert"] for c in found] == ["failed", "recovered"], found
    assert found[1]["run"]["id"] == recovered and found[1]["run"]["state"] == "Completed"

    assert api.delete(f"/api/schedules/{name}").status_code == 204
    blocks = httpx.post(f"{prefect_api_url}/block_documents/filter", json={}).json()
    assert f"sp-alerts-{name}" not in [b["name"] for b in blocks]


def test_a_stuck_run_and_a_late_one_are_reported(
    api: TestClient, source: HttpSource, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No timeout and no history: stuck past ALERT_STUCK_AFTER_SECONDS (10 s here). The run
    is made Running in Prefect directly (no worker takes it), as a run whose process hangs.
    Late: a run put in Prefect's Late state, as its late-runs service does (the test server
    runs none)."""
    monkeypatch.setattr(get_settings(), "alert_stuck_after_seconds", 10)
    hook = f"/hook-{uuid.uuid4().hex[:6]}"
    view = schedule(api, source, hook, alerts={"on": ["stuck", "late"]})

    async def late() -> str:
        async with get_client() as client:
            due = datetime.now(UTC) - timedelta(minutes=1)
            run = await client.create_flow_run_from_deployment(
                uuid.UUID(view["deployment_id"]), state=Scheduled(scheduled_time=due)
            )
            await client.set_flow_run_state(run.id, Late(scheduled_time=due))
            await client.set_flow_run_state(run.id, Cancelled(), force=True)
            return str(run.id)

    late_id = run_coro_as_sync(late())
    late_alert = wait_until(lambda: calls(source, hook), "the late alert", 60, 0.5)[0]
    assert late_alert["alert"] == "late" and late_alert["run"]["id"] == late_id

    async def hang() -> str:
        async with get_client() as client:
            deployment_id = uuid.UUID(view["deployment_id"])
            run = await client.create_flow_run_from_deployment(deployment_id, state=Running())
            return str(run.id)

    run_id = run_coro_as_sync(hang())
    started = time.monotonic()
    alert = wait_until(lambda: calls(source, hook)[1:], "the stuck alert", 60, 0.5)[0]
    assert time.monotonic() - started >= 9
    assert alert["alert"] == "stuck" and alert["run"]["id"] == run_id
    assert alert["run"]["state"] == "Running"

    async def stop() -> None:
        async with get_client() as client:
            await client.set_flow_run_state(uuid.UUID(run_id), Cancelled(), force=True)

    run_coro_as_sync(stop())
    assert api.delete(f"/api/schedules/{view['name']}").status_code == 204


@pytest.mark.parametrize(
    ("alerts", "loc"),
    [
        ({"on": ["failed"], "block": "no-such-block"}, ["alerts", "block"]),
        ({"on": ["failed"], "webhook": "ftp://x", "block": None}, ["alerts", "webhook"]),
        ({"on": ["failed"], "webhook": "http://127.0.0.1/h", "block": "b"}, ["alerts"]),
        ({"on": ["sometimes"], "webhook": "http://127.0.0.1/h"}, ["alerts", "on", 0]),
    ],
)
def test_bad_alerts_are_refused(
    api: TestClient, source: HttpSource, alerts: dict[str, Any], loc: list[Any]
) -> None:
    name = f"alert-{uuid.uuid4().hex[:8]}"
    answer = api.post("/api/schedules", json=api_call_spec(name, source.url, alerts=alerts))
    assert answer.status_code == 422, answer.text
    assert answer.json()["detail"][0]["loc"][1:] == loc
    assert api.get(f"/api/schedules/{name}").status_code == 404


def test_a_webhook_block_of_yours_is_used_and_kept(
    api: TestClient, source: HttpSource, prefect_api_url: str
) -> None:
    """`alerts.block` names your own Webhook block: the schedule's alert automations call it,
    and deleting the schedule leaves it (only `sp-alerts-<schedule>` blocks are ours)."""
    from prefect.blocks.webhook import Webhook
    from pydantic import SecretStr

    block = f"my-hook-{uuid.uuid4().hex[:6]}"
    Webhook(method="POST", url=SecretStr(f"{source.url}/mine")).save(block)
    name = f"alert-{uuid.uuid4().hex[:8]}"
    spec = api_call_spec(name, source.url, alerts={"on": ["failed", "late"], "block": block})
    answer = api.post("/api/schedules", json=spec)
    assert answer.status_code == 201, answer.text
    assert answer.json()["alerts"]["block"] == block
    owner = f"prefect.deployment.{answer.json()['deployment_id']}"
    automations = httpx.get(f"{prefect_api_url}/automations/related-to/{owner}").json()
    assert len(automations) == 2
    assert api.delete(f"/api/schedules/{name}").status_code == 204
    blocks = httpx.post(f"{prefect_api_url}/block_documents/filter", json={}).json()
    assert block in [b["name"] for b in blocks]
