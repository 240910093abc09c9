"""Flow runs: Prefect's state of one run beside our outcome row."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi import APIRouter, HTTPException, status
from prefect.exceptions import ObjectNotFound
from pydantic import BaseModel, Field

from api.deps import ScheduleServiceDep
from api.errors import ErrorAnswer
from deployments.views import RunView

router = APIRouter(prefix="/api/runs", tags=["runs"])


RUN_CONFLICT: dict[int | str, dict[str, Any]] = {
    409: {"model": ErrorAnswer, "description": "the run's state does not allow it"}
}


class RetryAnswer(BaseModel):
    flow_run_id: uuid.UUID
    retry_of: uuid.UUID


@contextmanager
def _known(flow_run_id: uuid.UUID) -> Iterator[None]:
    try:
        yield
    except ObjectNotFound:
        raise HTTPException(
            status.HTTP_404_NOT_FOUND, f"flow run {flow_run_id} not found"
        ) from None


class CatchUpAsk(BaseModel):
    flow_run_id: uuid.UUID


class CatchUpAnswer(BaseModel):
    flow_run_id: uuid.UUID
    action: str = Field(description="cancel: ended by its catch-up policy; run: left as it is")
    state_name: str | None = None
    reason: str = ""


@router.post(
    "/catch-up", responses={404: {"model": ErrorAnswer, "description": "no such flow run"}}
)
async def catch_up(ask: CatchUpAsk, service: ScheduleServiceDep) -> CatchUpAnswer:
    """Apply its schedule's catch-up policy to a run no worker took: what a schedule's
    catch-up automation in Prefect calls (deployments/catchup.py); anyone may, it only ends
    a run its policy says is missed or superseded."""
    with _known(ask.flow_run_id):
        decision = await service.catch_up(ask.flow_run_id)
    cancelled = decision.action == "cancel"
    return CatchUpAnswer(
        flow_run_id=ask.flow_run_id,
        action=decision.action,
        state_name=decision.name if cancelled else None,
        reason=decision.reason,
    )


@router.get("/{flow_run_id}")
async def read_run(flow_run_id: uuid.UUID, service: ScheduleServiceDep) -> RunView:
    """One run: Prefect state and timings, plus items processed / succeeded / failed."""
    with _known(flow_run_id):
        return await service.get_run(flow_run_id)


@router.post("/{flow_run_id}/cancel", responses=RUN_CONFLICT)
async def cancel_run(flow_run_id: uuid.UUID, service: ScheduleServiceDep) -> RunView:
    """Cancel a scheduled, pending or running run (a running one's process is stopped by its
    worker, then it ends Cancelled); 409 for a finished one."""
    with _known(flow_run_id):
        return await service.cancel_run(flow_run_id)


@router.post("/{flow_run_id}/retry", status_code=status.HTTP_202_ACCEPTED, responses=RUN_CONFLICT)
async def retry_run(flow_run_id: uuid.UUID, service: ScheduleServiceDep) -> RetryAnswer:
    """Run a failed, crashed or cancelled run again with the same parameters (a new run; asked
    twice, the same one); 409 for any other state."""
    with _known(flow_run_id):
        again = await service.retry_run(flow_run_id)
    return RetryAnswer(flow_run_id=again, retry_of=flow_run_id)
