"""The service-job pipeline: POST a JobContext to a service's job endpoint, keep the JobResult."""

from __future__ import annotations

import logging
import time
from typing import Any

import httpx
from prefect import flow, get_client, task
from prefect.cache_policies import NO_CACHE
from pydantic import ValidationError

from blocks.http import tls_context
from db.engine import get_engine
from flows.common import ReportedFailure, current_flow_run_id, recorded_run
from flows.http import raise_for_status
from flows.narration import exchange_line, run_logger
from flows.run_controls import flow_options
from flows.service_job_params import JobContext, JobResult, Trigger, resolve_service_url
from settings import get_settings


class JobFailed(ReportedFailure):
    """The service ran the job and reported failure (or answered something else)."""


@task(cache_policy=NO_CACHE)
async def call_service(client: httpx.AsyncClient, url: str, context: JobContext) -> JobResult:
    """POST the JobContext to the job endpoint and parse the JobResult it answers."""
    logger = run_logger()
    started = time.perf_counter()
    response = await client.post(url, json=context.model_dump(by_alias=True, exclude_none=True))
    line = exchange_line(response, time.perf_counter() - started)
    logger.log(logging.INFO if response.is_success else logging.WARNING, line)
    raise_for_status(response)
    try:
        result = JobResult.model_validate_json(response.content)
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(map(str, problem["loc"])) or "body"
        raise JobFailed(f"malformed JobResult from {url}: {where}: {problem['msg']}") from None
    logger.info(
        "job %s %s: %s processed, %s succeeded, %s failed%s",
        context.job_name,
        "succeeded" if result.success else "failed",
        f"{result.items_processed:,}",
        f"{result.items_succeeded:,}",
        f"{result.items_failed:,}",
        f" ({result.error})" if result.error else "",
    )
    return result


async def detect_trigger(flow_run_id: Any) -> Trigger:
    """Runs Prefect's scheduler made are the scheduler's; others (UI, CLI) an admin's."""
    async with get_client() as client:
        run = await client.read_flow_run(flow_run_id)
    return "scheduler" if run.auto_scheduled else "admin"


@flow(name="service-job", **flow_options())
async def service_job(
    job_name: str,
    service: str,
    endpoint: str,
    config: dict[str, Any] | None = None,
    display_name: str | None = None,
    timeout_seconds: float = 300,
    triggered_by: Trigger | None = None,
    triggered_by_user: str | None = None,
) -> dict[str, Any]:
    """Trigger a registered job on its service and record the JobResult's counts."""
    settings = get_settings()
    trigger = triggered_by or await detect_trigger(current_flow_run_id())
    with recorded_run(
        get_engine(),
        "service_job",
        triggered_by=trigger,
        triggered_by_user=triggered_by_user,
    ) as outcome:
        url = resolve_service_url(
            settings.service_urls, settings.service_allowed_prefixes, service, endpoint
        )
        context = JobContext(
            job_name=job_name,
            config=config or {},
            execution_id=str(outcome.flow_run_id),
            triggered_by=trigger,
            triggered_by_user=triggered_by_user,
        )
        # Prefect's task timeout ends a hung service as a failed run; httpx's is a backstop.
        async with httpx.AsyncClient(timeout=timeout_seconds + 5, verify=tls_context()) as client:
            result = await call_service.with_options(timeout_seconds=timeout_seconds)(
                client, url, context
            )
        outcome.items_processed = result.items_processed
        outcome.items_succeeded = result.items_succeeded
        outcome.items_failed = result.items_failed
        outcome.meta = {**outcome.meta, "metadata": result.metadata}
        if not result.success:
            raise JobFailed(result.error or f"{service} reported success: false")
    return result.model_dump(by_alias=True)
