"""The process work pool our deployments run on, with a job template and limit that fit."""

from __future__ import annotations

from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolCreate, WorkPoolUpdate
from prefect.exceptions import ObjectNotFound
from prefect.workers.process import ProcessWorker

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


async def ensure_work_pool(
    client: PrefectClient,
    name: str | None = None,
    concurrency_limit: int | None = None,
    flow_run_command: str | None = None,
) -> None:
    """Create the pool, or bring an existing one to these values (idempotent).

    Each argument defaults to its setting (WORK_POOL_NAME, WORK_POOL_CONCURRENCY,
    FLOW_RUN_COMMAND).
    """
    settings = get_settings()
    name = name or settings.work_pool_name
    concurrency_limit = concurrency_limit or settings.work_pool_concurrency
    template = process_job_template(flow_run_command or settings.flow_run_command)
    try:
        pool = await client.read_work_pool(name)
    except ObjectNotFound:
        await client.create_work_pool(
            WorkPoolCreate(
                name=name,
                type="process",
                base_job_template=template,
                concurrency_limit=concurrency_limit,
            )
        )
        return
    if pool.concurrency_limit != concurrency_limit or pool.base_job_template != template:
        await client.update_work_pool(
            name,
            WorkPoolUpdate(concurrency_limit=concurrency_limit, base_job_template=template),
        )
