"""Liveness of what the API depends on: our database and Prefect's API."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from api.deps import EngineDep, PrefectClientDep
from db.health import database_problem

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str
    prefect: str


@router.get(
    "/health",
    responses={503: {"model": Health, "description": "our database or Prefect is not ready"}},
)
async def health(engine: EngineDep, client: PrefectClientDep, response: Response) -> Health:
    """200 when our database is writable and migrated and the Prefect API answers, else 503
    saying what is wrong."""
    database = prefect = "ok"
    if (problem := await anyio.to_thread.run_sync(database_problem, engine)) is not None:
        database = f"error: {problem}"
    if (error := await client.api_healthcheck()) is not None:
        prefect = f"error: {type(error).__name__}"
    healthy = database == prefect == "ok"
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="ok" if healthy else "unavailable", database=database, prefect=prefect)
