"""The crew fan-out without Prefect: payloads, eligibility, retries, failures, concurrency bound."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from flows.crew_batches import rate_limit_name, response_rows
from flows.crew_calls import (
    CrewCaller,
    CrewUser,
    crew_payload,
    retry_delays,
)

USER = CrewUser("u1", "Bakery in Lyon", "Rapid growth")


def test_the_payload_is_the_crew_schedulers_request_body():
    assert crew_payload(USER) == {
        "customer_business_background_latest": "Bakery in Lyon",
        "customer_goal_latest": "Rapid growth",
    }


def test_retry_delays_double_from_the_backoff():
    assert retry_delays(3, 0.5) == [0.5, 1.0, 2.0]
    assert retry_delays(0, 0.5) == []


def test_rate_limit_names_are_per_host():
    assert rate_limit_name("13.53.53.18:8000") == "crew-api-13-53-53-18-8000"


def caller_for(handler: Any, **options: Any) -> CrewCaller:
    transport = httpx.MockTransport(handler)
    defaults: dict[str, Any] = {
        "concurrency": 5,
        "retries": 2,
        "backoff_seconds": 0.0,
        "timeout_seconds": 1.0,
    }
    return CrewCaller(transport, "http://crew.test/run-crew", **{**defaults, **options})


def test_transient_failures_are_retried_until_an_answer():
    attempts: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) < 3:
            return httpx.Response(503)
        return httpx.Response(200, json={"plan": json.loads(request.content)})

    result = asyncio.run(caller_for(handler).call(USER))
    assert result.succeeded and result.attempts == 3
    assert result.response == {"plan": crew_payload(USER)}


@pytest.mark.parametrize(
    ("reply", "attempts", "error"),
    [
        (httpx.Response(500), 3, "HTTP 500 Internal Server Error from POST"),
        (httpx.Response(400), 1, "HTTP 400 Bad Request"),
        (httpx.Response(200, text="<html>"), 1, "is not JSON"),
    ],
)
def test_a_call_that_still_fails_comes_back_with_its_error(reply, attempts, error):
    hits: list[int] = []

    def handler(_request: httpx.Request) -> httpx.Response:
        hits.append(1)
        return reply

    result = asyncio.run(caller_for(handler).call(USER))
    assert not result.succeeded and error in (result.error or "")
    assert result.attempts == len(hits) == attempts


def test_timeouts_are_retried_then_recorded():
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ReadTimeout("slow", request=request)

    result = asyncio.run(caller_for(handler, retries=1).call(USER))
    assert result.attempts == 2 and (result.error or "").startswith("timeout: ReadTimeout")


def test_no_more_calls_in_flight_than_the_concurrency():
    in_flight = peak = 0

    async def handler(_request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, json={})

    users = [CrewUser(f"u{i}", "c", "g") for i in range(40)]
    results = asyncio.run(caller_for(handler, concurrency=7).call_all(users))
    assert [r.user.uid for r in results] == [u.uid for u in users]
    assert peak == 7


def test_rows_keep_the_request_the_answer_and_the_error():
    import uuid
    from datetime import UTC, datetime

    from flows.crew_calls import CrewResult

    run, now = uuid.uuid4(), datetime.now(UTC)
    ok, failed = CrewResult(USER, response={"a": 1}), CrewResult(USER, error="HTTP 500")
    rows = response_rows([ok, failed], run, now)
    assert rows[0] | {"created_at": None} == {
        "user_uid": "u1",
        "request_context": "Bakery in Lyon",
        "request_goal": "Rapid growth",
        "response_data": {"a": 1},
        "created_at": None,
        "flow_run_id": run,
        "status": "succeeded",
        "error": None,
    }
    assert (rows[1]["status"], rows[1]["error"], rows[1]["response_data"]) == (
        "failed",
        "HTTP 500",
        None,
    )


def test_a_hung_call_times_out_at_the_deadline_and_headers_are_sent():
    seen: list[httpx.Request] = []

    async def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        await asyncio.sleep(5)
        return httpx.Response(200, json={})

    caller = caller_for(
        handler, retries=0, timeout_seconds=0.05, headers={"Authorization": "Bearer k"}
    )
    result = asyncio.run(caller.call(USER))
    assert (result.error or "").startswith("timeout: ReadTimeout")
    assert seen[0].headers["authorization"] == "Bearer k"
    assert json.loads(seen[0].content) == crew_payload(USER)
