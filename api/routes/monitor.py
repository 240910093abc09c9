"""The monitor (`GET /api/monitor`: failed, stuck, stale and late) and `GET /metrics`."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi import APIRouter, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST

from api.deps import PrefectClientDep
from api.metrics import ApiMetrics
from deployments.monitor import MonitorReport, read_monitor
from deployments.prefect_api import late_runs_after

router = APIRouter(tags=["monitor"])


@router.get("/api/monitor")
async def monitor(client: PrefectClientDep) -> MonitorReport:
    """Schedules whose last run failed, runs stuck past their timeout or 3x their median,
    schedules with no run for 2x their interval, and runs late past Prefect's grace."""
    return await read_monitor(client, datetime.now(UTC), late_runs_after())


@router.get(
    "/metrics",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def metrics(request: Request, client: PrefectClientDep) -> Response:
    """Runs started and finished (by schedule, pipeline and final state), run durations and
    lateness, queued runs, items processed and failed, and our API's requests."""
    collected: ApiMetrics = request.app.state.metrics
    body = await collected.exposition(client)
    return Response(body, media_type=CONTENT_TYPE_LATEST)
