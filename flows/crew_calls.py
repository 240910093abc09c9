"""Calling the crew API for many users at once: payloads, per-request retries, bounded fan-out.

Plain async code, not Prefect tasks: a task per HTTP call costs more than the call (measured in
benchmarks/crew_fanout.py), so the flow runs one task per batch and this module does the calls.
For the same reason a call's retries are ours (Prefect's retry policy applies to whole tasks);
the delays are Prefect's exponential backoff with Prefect's jitter.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport
from prefect.tasks import exponential_backoff
from prefect.utilities.math import clamped_poisson_interval

from blocks.http import tls_context
from flows.http import describe_error, is_retryable, raise_for_status

JITTER = 0.5


@dataclass(frozen=True, slots=True)
class CrewUser:
    uid: str
    context: str | None
    goal: str | None


@dataclass(frozen=True, slots=True)
class CrewResult:
    user: CrewUser
    response: Any = None
    error: str | None = None
    attempts: int = 1

    @property
    def succeeded(self) -> bool:
        return self.error is None


def crew_payload(user: CrewUser) -> dict[str, Any]:
    """The crew scheduler's request body, unchanged."""
    return {
        "customer_business_background_latest": user.context,
        "customer_goal_latest": user.goal,
    }


def retry_delays(retries: int, backoff_seconds: float) -> list[float]:
    """Mean delay before each retry: Prefect's exponential backoff (b, 2b, 4b, ...)."""
    return list(exponential_backoff(backoff_seconds)(retries)) if retries else []


def jittered(delay: float) -> float:
    """Prefect's retry jitter: a clamped Poisson interval around `delay`."""
    return float(clamped_poisson_interval(delay, clamping_factor=JITTER)) if delay > 0 else 0.0


def crew_transport(concurrency: int) -> httpx.AsyncBaseTransport:
    """httpx's transport interface on aiohttp's engine, a connection per call in flight.

    Measured for 1,000 calls at 50 in flight (benchmarks/crew_fanout.py): httpx's own pool
    costs ~12 ms of CPU per call (13x the latency floor), ten small pools 2.4 ms; the aiohttp
    transport under an httpx client ~0.9 ms, and called directly ~0.5 ms (the client's cookie,
    auth, redirect and URL-merging layers are the rest; raw aiohttp ~0.35 ms).
    """
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    return AiohttpTransport(verify=tls_context(), limits=limits)


class CrewCaller:
    """Sends users to the crew API with at most `concurrency` calls in flight.

    A user's call is retried on timeouts, dropped connections, 429 and 5xx, with backoff and
    jitter; the slot is released while it waits, so other users go on. Whatever still fails
    becomes a CrewResult with the error: no user is dropped. Calls go straight to an httpx
    transport (httpx.Request in, httpx.Response out): no client layers per call.
    """

    def __init__(
        self,
        transport: httpx.AsyncBaseTransport,
        url: str,
        *,
        concurrency: int,
        retries: int,
        backoff_seconds: float,
        timeout_seconds: float,
        headers: dict[str, str] | None = None,
        before_call: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.transport = transport
        self.url = httpx.URL(url)
        self.headers = {**(headers or {}), "content-type": "application/json"}
        self.slots = asyncio.Semaphore(concurrency)
        self.delays = retry_delays(retries, backoff_seconds)
        self.timeout_seconds = timeout_seconds
        self.extensions = {"timeout": httpx.Timeout(timeout_seconds).as_dict()}
        self.before_call = before_call

    async def _attempt(self, body: bytes) -> Any:
        request = httpx.Request(
            "POST", self.url, content=body, headers=self.headers, extensions=self.extensions
        )
        async with self.slots:
            if self.before_call is not None:
                await self.before_call()
            try:
                async with asyncio.timeout(self.timeout_seconds):
                    response = await self.transport.handle_async_request(request)
                    try:
                        await response.aread()
                    finally:
                        await response.aclose()
            except TimeoutError:
                raise httpx.ReadTimeout(
                    f"no answer within {self.timeout_seconds} s", request=request
                ) from None
        response.request = request
        raise_for_status(response)
        try:
            return response.json()
        except ValueError:
            raise ValueError(f"response from POST {self.url} is not JSON") from None

    async def call(self, user: CrewUser) -> CrewResult:
        body = json.dumps(crew_payload(user)).encode()
        attempt = 0
        while True:
            attempt += 1
            try:
                return CrewResult(user, response=await self._attempt(body), attempts=attempt)
            except Exception as exc:
                if attempt > len(self.delays) or not is_retryable(exc):
                    return CrewResult(user, error=describe_error(exc), attempts=attempt)
            await asyncio.sleep(jittered(self.delays[attempt - 1]))

    async def call_all(self, users: Sequence[CrewUser]) -> list[CrewResult]:
        return list(await asyncio.gather(*(self.call(u) for u in users)))
