"""The work pool our deployments run on: its worker type, job template, limit and queues."""

from __future__ import annotations

import itertools
import logging
import uuid
from typing import Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentUpdate, WorkPoolCreate, WorkPoolUpdate
from prefect.client.schemas.filters import WorkPoolFilter, WorkPoolFilterName
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.sorting import DeploymentSort
from prefect.exceptions import ObjectNotFound

from deployments.job_template import locked_job_template, locked_job_variables
from deployments.prefect_api import PREFECT_PAGE, reschedule_at_its_time, runs_filter
from deployments.warm_worker import WORKER_TYPE, WarmProcessWorker
from settings import get_settings

logger = logging.getLogger(__name__)
# The pool's work queues, highest priority first (Prefect's priority 1, 2, ...): a schedule's
# `priority` is the queue its runs go to, and a worker whose slots are short takes runs from
# a higher-priority queue first. Prefect's own `default` queue (deployments made outside our
# API, such as prefect.yaml's) ranks just below `normal`.
PRIORITY_QUEUES = ("critical", "high", "normal", "default", "low")


def job_template(worker_type: str, flow_run_command: str) -> dict[str, Any]:
    """The base job template of a pool for `worker_type` (our warm worker or Prefect's).

    Both are locked (deployments/job_template.py). The stock worker's runs execute
    `flow_run_command`: without a command, Prefect 3.8's process worker starts a workspace
    supervisor process that imports Prefect and then execs the engine, which imports it
    again: two imports (2-4 s of CPU each here) before a flow starts. With the engine command
    set, the worker resolves the flow itself and starts one process per run.
    """
    if worker_type == WORKER_TYPE:
        return WarmProcessWorker.get_default_base_job_template()
    return locked_job_template(flow_run_command)


async def lock_job_variables(client: PrefectClient, pool_name: str) -> list[str]:
    """Rewrite the job variables of the pool's deployments made before the template was
    locked (retries out of `env`, variables it no longer has dropped); their names."""
    rewritten: list[str] = []
    for offset in itertools.count(0, PREFECT_PAGE):
        page = await client.read_deployments(
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool_name])),
            sort=DeploymentSort.NAME_ASC,
            limit=PREFECT_PAGE,
            offset=offset,
        )
        for deployment in page:
            variables = locked_job_variables(deployment.job_variables)
            if variables is not None:
                update = DeploymentUpdate(job_variables=variables)
                await client.update_deployment(deployment.id, update)
                rewritten.append(deployment.name)
        if len(page) < PREFECT_PAGE:
            break
    if rewritten:
        logger.warning(
            "Job variables of %d deployment(s) rewritten for the locked job template "
            "(retries kept, command/env/working_dir dropped): %s",
            len(rewritten),
            ", ".join(rewritten),
        )
    return rewritten


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
        await ensure_priority_queues(client, name)
        return
    template = job_template(pool.type, flow_run_command or settings.flow_run_command)
    if pool.concurrency_limit != concurrency_limit or pool.base_job_template != template:
        await client.update_work_pool(
            name,
            WorkPoolUpdate(concurrency_limit=concurrency_limit, base_job_template=template),
        )
    await lock_job_variables(client, name)
    await ensure_priority_queues(client, name)


async def ensure_priority_queues(client: PrefectClient, pool_name: str) -> None:
    """Give the pool its PRIORITY_QUEUES with Prefect priorities in that order (idempotent).

    Prefect keeps a pool's priorities sequential, moving the others when one changes, so
    each queue is set in order and the list read again only when something moved.
    """
    for _ in range(2):
        queues = {q.name: q for q in await client.read_work_queues(work_pool_name=pool_name)}
        wrong = [
            (rank, name)
            for rank, name in enumerate(PRIORITY_QUEUES, 1)
            if name not in queues or queues[name].priority != rank
        ]
        if not wrong:
            return
        for rank, name in wrong:
            if name in queues:
                await client.update_work_queue(queues[name].id, priority=rank)
            else:
                await client.create_work_queue(
                    name=name,
                    work_pool_name=pool_name,
                    priority=rank,
                    description=f"Runs of schedules of priority {name}",
                )


HALF_SUBMITTED = "handed back at start: its worker stopped before starting it"


async def hand_back_pending_runs(client: PrefectClient, pool_name: str) -> int:
    """Runs of `pool_name` left Pending (claimed, never started) go back to Scheduled at their
    time; how many. Only for a pool none of whose workers runs: `make run` calls it before it
    starts the pool's one worker. A worker that stops hands back what it claimed
    (`WarmProcessWorker._hand_back_unstarted_runs`); this takes what a killed one, or the
    moment between Prefect's Pending and the fork, left behind: no worker takes a Pending
    run, and it sends no heartbeat for Prefect's crash automation to notice."""
    pool = WorkPoolFilter(name=WorkPoolFilterName(any_=[pool_name]))
    handed_back: set[uuid.UUID] = set()
    # Each page's runs leave Pending, so the next page is the first one again; a run that
    # came back (it could not be moved) ends the loop instead of repeating it.
    while runs := await client.read_flow_runs(
        flow_run_filter=runs_filter([StateType.PENDING]), work_pool_filter=pool, limit=PREFECT_PAGE
    ):
        if handed_back.intersection(run.id for run in runs):
            break
        for run in runs:
            await reschedule_at_its_time(client, run, HALF_SUBMITTED)
            handed_back.add(run.id)
            logger.info("flow run %s (%s) %s", run.name, run.id, HALF_SUBMITTED)
    return len(handed_back)
