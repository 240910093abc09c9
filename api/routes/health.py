"""Liveness of what the API depends on (our database and Prefect's API), and whether a
worker is polling our pool (Prefect's work-pool status)."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Response, status
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import WorkPoolStatus
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, Field

from api.deps import EngineDep, PrefectClientDep, SettingsDep
from db.health import database_problem

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str
    prefect: str
    worker: str = Field(
        description="ok when a worker polled the pool lately (Prefect's READY); informational: "
        "runs wait, none is lost, while no worker polls"
    )


@router.get(
    "/health",
    responses={503: {"model": Health, "description": "our database or Prefect is not ready"}},
)
async def health(
    engine: EngineDep, client: PrefectClientDep, settings: SettingsDep, response: Response
) -> Health:
    """200 when our database is writable and migrated and the Prefect API answers, else 503
    saying what is wrong; `worker` says whether a worker polls the pool."""
    database = prefect = "ok"
    worker = "unknown: Prefect did not answer"
    if (problem := await anyio.to_thread.run_sync(database_problem, engine)) is not None:
        database = f"error: {problem}"
    if (error := await client.api_healthcheck()) is not None:
        prefect = f"error: {type(error).__name__}"
    else:
        worker = await pool_status(client, settings.work_pool_name)
    healthy = database == prefect == "ok"
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(
        status="ok" if healthy else "unavailable",
        database=database,
        prefect=prefect,
        worker=worker,
    )


async def pool_status(client: PrefectClient, pool_name: str) -> str:
    """ "ok" when Prefect says a worker polls the pool, else what it says instead."""
    try:
        pool = await client.read_work_pool(pool_name)
    except ObjectNotFound:
        return f"no pool {pool_name!r}: `make run` creates it"
    if pool.status == WorkPoolStatus.READY:
        return "ok"
    if pool.status == WorkPoolStatus.PAUSED:
        return f"pool {pool_name!r} is paused: no run starts until it is resumed"
    return f"no worker has polled pool {pool_name!r} lately: runs wait until one does"
