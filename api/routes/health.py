"""Liveness of what the API depends on: our database and Prefect's API."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Response, status
from pydantic import BaseModel

from api.deps import EngineDep, PrefectClientDep

router = APIRouter(tags=["health"])


class Health(BaseModel):
    status: str
    database: str
    prefect: str


@router.get("/health")
async def health(engine: EngineDep, client: PrefectClientDep, response: Response) -> Health:
    """200 when our database and the Prefect API both answer, 503 otherwise."""
    database = prefect = "ok"
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:  # any failure means unhealthy; say which kind
        database = f"error: {type(exc).__name__}"
    if (error := await client.api_healthcheck()) is not None:
        prefect = f"error: {type(error).__name__}"
    healthy = database == prefect == "ok"
    if not healthy:
        response.status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    return Health(status="ok" if healthy else "unavailable", database=database, prefect=prefect)
