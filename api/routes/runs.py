"""Flow runs: Prefect's state of one run beside our outcome row."""

from __future__ import annotations

import uuid

from fastapi import APIRouter, HTTPException, status
from prefect.exceptions import ObjectNotFound

from api.deps import ScheduleServiceDep
from deployments.views import RunView

router = APIRouter(prefix="/api/runs", tags=["runs"])


@router.get("/{flow_run_id}")
async def read_run(flow_run_id: uuid.UUID, service: ScheduleServiceDep) -> RunView:
    """One run: Prefect state and timings, plus items processed / succeeded / failed."""
    try:
        return await service.get_run(flow_run_id)
    except ObjectNotFound:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"flow run {flow_run_id} not found"
        ) from None
