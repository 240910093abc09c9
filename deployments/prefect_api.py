"""Prefect API calls the client does not make the way we need: pages, upserts, run paging.

Plain functions over a `PrefectClient`. Where we call Prefect's REST routes directly it is
because the client's method costs a second call (it answers an id where the route answers the
object) or lacks a filter the server has; each says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from datetime import datetime, timedelta
from typing import Any

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentCreate, GlobalConcurrencyLimitCreate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
from prefect.settings import get_current_settings
from prefect.states import Scheduled

from deployments.spec import GlobalLimit, RateLimit

# Prefect's list endpoints return at most this many items per call.
PREFECT_PAGE = 200
# The tag Prefect gives the runs its scheduler (or its backfill endpoint) makes.
AUTO_SCHEDULED = "auto-scheduled"
# Flow ids by (Prefect API, flow name): a flow is created once, not upserted per request.
_FLOW_IDS: dict[tuple[str, str], uuid.UUID] = {}


async def page_deployments(
    client: PrefectClient, body: dict[str, Any], limit: int, offset: int
) -> tuple[list[dict[str, Any]], int]:
    """A page of deployments by name for a filter `body`, as Prefect's JSON (each parsed by
    the caller, so one unreadable deployment spoils only itself), and the filter's total.

    One call (`/deployments/paginate`, page and total) when `offset` is a whole number of
    pages no larger than Prefect's (200); else filters of at most 200 and one count at once,
    since paginate takes only page numbers. The body is raw because Prefect's server filters
    on `paused` while its client model lacks it.
    """
    if limit <= PREFECT_PAGE and offset % limit == 0:
        answer = await client.request(
            "POST",
            "/deployments/paginate",
            json={**body, "limit": limit, "page": offset // limit + 1, "sort": "NAME_ASC"},
        )
        data = answer.json()
        found, total = data["results"], data["count"]
    else:
        parts = [
            client.request(
                "POST",
                "/deployments/filter",
                json={
                    **body,
                    "limit": min(PREFECT_PAGE, offset + limit - start),
                    "offset": start,
                    "sort": "NAME_ASC",
                },
            )
            for start in range(offset, offset + limit, PREFECT_PAGE)
        ]
        *pages, count = await asyncio.gather(
            *parts, client.request("POST", "/deployments/count", json=body)
        )
        found, total = [d for page in pages for d in page.json()], count.json()
    return list(found), int(total)


async def upsert_deployment(
    client: PrefectClient, work_pool_name: str, flow_name: str, fields: dict[str, Any]
) -> DeploymentResponse:
    """Prefect's create-deployment call (an upsert on flow and name), keeping its answer.

    `PrefectClient.create_deployment` sends the same body but returns only the id, which
    would cost a second read; the flow's id is looked up once per process, not per call.
    """
    key = (str(client.api_url), flow_name)
    cached = _FLOW_IDS.get(key)
    try:
        return await _post_deployment(
            client, cached or await _flow_id(client, key), work_pool_name, fields
        )
    except httpx.HTTPStatusError as exc:
        if cached is None or exc.response.status_code not in (404, 409):
            raise
    # The cached flow was deleted since (an operator's `prefect flow delete`): create it again.
    return await _post_deployment(client, await _flow_id(client, key), work_pool_name, fields)


async def _flow_id(client: PrefectClient, key: tuple[str, str]) -> uuid.UUID:
    _FLOW_IDS[key] = await client.create_flow_from_name(key[1])
    return _FLOW_IDS[key]


async def _post_deployment(
    client: PrefectClient, flow_id: uuid.UUID, work_pool_name: str, fields: dict[str, Any]
) -> DeploymentResponse:
    body = DeploymentCreate(flow_id=flow_id, **fields)
    body.work_pool_name = work_pool_name
    response = await client.request(
        "POST", "/deployments/", json=body.model_dump(mode="json", exclude_unset=True)
    )
    return DeploymentResponse.model_validate(response.json())


async def scheduled_runs_between(
    client: PrefectClient, deployment_id: uuid.UUID, first: datetime, last: datetime
) -> list[FlowRun]:
    """The runs Prefect's scheduler made for a deployment due from `first` to `last`
    (inclusive; not the ones started by hand), earliest first."""
    runs: list[FlowRun] = []
    while True:
        chunk = await client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(after_=first, before_=last)
            ),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=PREFECT_PAGE,
            offset=len(runs),
        )
        runs += chunk
        if len(chunk) < PREFECT_PAGE:
            return [r for r in runs if AUTO_SCHEDULED in (r.tags or [])]


async def ensure_limits(
    client: PrefectClient, limits: list[GlobalLimit], rate: RateLimit | None, size: int
) -> None:
    """Create the global concurrency limits a schedule names that do not exist yet (`size`
    slots unless the limit says; a rate limit's slots decay at its rate). An existing limit
    is left as it is: an operator may have resized it in Prefect's UI."""
    wanted = [
        GlobalConcurrencyLimitCreate(name=limit.name, limit=limit.size or size) for limit in limits
    ]
    if rate is not None:
        wanted.append(
            GlobalConcurrencyLimitCreate(
                name=rate.name,
                limit=max(1, math.ceil(rate.per_second)),
                slot_decay_per_second=rate.per_second,
            )
        )
    for limit in wanted:
        try:
            await client.read_global_concurrency_limit_by_name(limit.name)
        except ObjectNotFound:
            with contextlib.suppress(ObjectAlreadyExists):  # made meanwhile by another
                await client.create_global_concurrency_limit(limit)


def runs_filter(states: list[StateType]) -> FlowRunFilter:
    """Flow runs in any of `states`."""
    return FlowRunFilter(state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states)))


async def reschedule_at_its_time(client: PrefectClient, flow_run: FlowRun, message: str) -> None:
    """A claimed run that never started back to Scheduled at the time it was due, for a worker
    to take again (forced: Prefect allows no Pending -> Scheduled otherwise)."""
    await client.set_flow_run_state(
        flow_run.id,
        Scheduled(scheduled_time=flow_run.expected_start_time, message=message),
        force=True,
    )


async def page_flow_runs(
    client: PrefectClient,
    limit: int,
    sort: FlowRunSort = FlowRunSort.EXPECTED_START_TIME_DESC,
    offset: int = 0,
    **filters: Any,
) -> list[FlowRun]:
    """Up to `limit` flow runs matching Prefect's read filters (`flow_filter=`,
    `flow_run_filter=`, `deployment_filter=`...), read page by page past Prefect's page cap."""
    runs: list[FlowRun] = []
    while len(runs) < limit:
        chunk = await client.read_flow_runs(
            sort=sort,
            limit=min(PREFECT_PAGE, limit - len(runs)),
            offset=offset + len(runs),
            **filters,
        )
        runs += chunk
        if len(chunk) < PREFECT_PAGE:
            break
    return runs


async def read_runs(
    client: PrefectClient,
    deployment_id: uuid.UUID,
    states: list[StateType],
    limit: int,
    offset: int = 0,
) -> list[FlowRun]:
    """Up to `limit` runs of a deployment in `states`, newest first, past Prefect's page cap."""
    return await page_flow_runs(
        client,
        limit,
        offset=offset,
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=runs_filter(states),
    )


async def count_runs(
    client: PrefectClient, deployment_id: uuid.UUID, states: list[StateType]
) -> int:
    """How many runs of a deployment are in `states`."""
    return await client.count_flow_runs(
        deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
        flow_run_filter=runs_filter(states),
    )


def late_runs_after() -> timedelta:
    """How long past its time Prefect's late-runs service marks a run Late (its setting,
    read here: the server is assumed to run with the same, 15 s by default)."""
    after = get_current_settings().server.services.late_runs.after_seconds
    return after if isinstance(after, timedelta) else timedelta(seconds=float(after))
