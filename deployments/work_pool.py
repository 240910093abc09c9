"""The work pool our deployments run on: its worker type, job template and limit."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker

from deployments.warm_worker import WORKER_TYPE, WarmProcessWorker
from settings import get_settings


def process_job_template(flow_run_command: str | None) -> dict[str, Any]:
    """The process worker's job template, with the command each flow run starts with.

    Without a command, Prefect 3.8's process worker starts a workspace supervisor process
    that imports Prefect and then execs the engine, which imports it again: two imports
    (2-4 s of CPU each here) before a flow starts. With the engine command set, the worker
    resolves the flow itself and starts one process per run.
    """
    template = ProcessWorker.get_default_base_job_template()
    if flow_run_command:
        template["variables"]["properties"]["command"]["default"] = flow_run_command
    return template


def job_template(worker_type: str, flow_run_command: str | None) -> dict[str, Any]:
    """The base job template of a pool for `worker_type` (our warm worker or Prefect's)."""
    if worker_type == WORKER_TYPE:
        return WarmProcessWorker.get_default_base_job_template()
    return process_job_template(flow_run_command)


async def ensure_work_pool(
    client: PrefectClient,
    name: str | None = None,
    concurrency_limit: int | None = None,
    flow_run_command: str | None = None,
    worker_type: str | None = None,
) -> None:
    """Create the pool, or bring an existing one to these values (idempotent).

    Each argument defaults to its setting (WORK_POOL_NAME, WORK_POOL_CONCURRENCY,
    FLOW_RUN_COMMAND, WORKER_TYPE). Prefect cannot change a pool's type: a pool made for
    another worker type keeps it (workers of either type poll it; Prefect logs a warning).
    """
    settings = get_settings()
    name = name or settings.work_pool_name
    concurrency_limit = concurrency_limit or settings.pool_concurrency
    worker_type = worker_type or settings.worker_type
    try:
        pool = await client.read_work_pool(name)
    except ObjectNotFound:
        await client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type=worker_type,
                base_job_template=job_template(
                    worker_type, flow_run_command or settings.flow_run_command
                ),
                concurrency_limit=concurrency_limit,
            )
        )
        return
    template = job_template(pool.type, flow_run_command or settings.flow_run_command)
    if pool.concurrency_limit != concurrency_limit or pool.base_job_template != template:
        await client.update_work_pool(
            name,
            WorkPoolUpdate(concurrency_limit=concurrency_limit, base_job_template=template),
        )
