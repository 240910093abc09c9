"""What a schedule's spec asks of its runs' flows: a timeout, and a backoff for flow retries.

A deployment's job variables reach its runs as environment variables (the pool's job
template, deployments/job_template.py); every flow's decorator takes `flow_options()`, read
when its module is imported (the warm worker's zygote imports the flows again for a run whose
variables differ, as it does for Prefect's own retry settings).

- `timeout_seconds` is Prefect's own flow timeout: a run still running past it ends Failed,
  named TimedOut.
- Prefect's flow retries wait a fixed `retry_delay_seconds` (unlike task retries, they take
  no list of delays): for `exponential`, a hook on Running sets the run's retry delay to what
  this attempt's failure should wait (Prefect's server schedules the retry from it).
"""

from __future__ import annotations

import os
from typing import Any

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import FlowRun, State
from prefect.flows import Flow

TIMEOUT_ENV = "SCHEDULE_TIMEOUT_SECONDS"
BACKOFF_ENV = "SCHEDULE_RETRY_BACKOFF"
MAX_DELAY_ENV = "SCHEDULE_RETRY_MAX_DELAY_SECONDS"
# What the template gives a run whose deployment sets none of them (0: none).
DEFAULTS = {TIMEOUT_ENV: "0", BACKOFF_ENV: "fixed", MAX_DELAY_ENV: "0"}


def _number(name: str) -> float:
    try:
        return max(0.0, float(os.environ.get(name) or 0))
    except ValueError:
        return 0.0


def retry_delay(base: float, attempt: int, backoff: str, max_delay: float = 0) -> float:
    """Seconds a failure of attempt `attempt` (1 = the first run) waits before the next one:
    `base` for fixed; base, 2·base, 4·base, ... for exponential, at most `max_delay` (0: no cap)."""
    delay = base if backoff != "exponential" else base * 2 ** max(0, attempt - 1)
    return min(delay, max_delay) if max_delay else delay


async def apply_retry_backoff(flow: Flow[Any, Any], flow_run: FlowRun, state: State) -> None:
    """On Running: this attempt's retry delay, as Prefect's server will read it on failure."""
    base = float(flow.retry_delay_seconds or 0)
    async with get_client() as client:
        # The engine's copy of the run keeps the run count it started with: Prefect's
        # server counts each attempt as it goes Running.
        attempt = (await client.read_flow_run(flow_run.id)).run_count
        delay = retry_delay(base, attempt, "exponential", _number(MAX_DELAY_ENV))
        policy = flow_run.empirical_policy.model_copy(update={"retry_delay": delay})
        await client.update_flow_run(flow_run.id, empirical_policy=policy)
    flow_run.empirical_policy = policy


def flow_options() -> dict[str, Any]:
    """The `@flow` options this run's schedule asks for (none when it asks for nothing)."""
    options: dict[str, Any] = {}
    if timeout := _number(TIMEOUT_ENV):
        options["timeout_seconds"] = timeout
    if os.environ.get(BACKOFF_ENV) == "exponential":
        options["on_running"] = [apply_retry_backoff]
    return options
