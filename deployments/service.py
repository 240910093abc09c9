"""Schedules as Prefect deployments: apply a spec, pause, resume, run now, delete, history, stats.

Everything goes through Prefect's Python client; Prefect's server is the only copy of a
schedule, so what operators change in the UI or CLI is what this service reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import (
    DeploymentCreate,
    DeploymentScheduleCreate,
    WorkPoolCreate,
    WorkPoolUpdate,
)
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterId,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import (
    ConcurrencyLimitStrategy,
    ConcurrencyOptions,
    FlowRun,
    StateType,
)
from prefect.client.schemas.responses import DeploymentResponse
from prefect.client.schemas.schedules import NoSchedule
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Scheduled
from prefect.utilities.callables import parameter_schema
from pydantic import BaseModel, Field, ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from db.crud import get_run_outcomes, outcome_totals
from db.models import RunOutcome
from deployments.pipelines import FLOW_TO_PIPELINE, PIPELINES, Pipeline
from deployments.prefect_schedules import (
    from_prefect_schedule,
    next_fire_times,
    to_prefect_schedule,
)
from deployments.spec import SchedulePatch, ScheduleSpec, SpecSettings, Timing
from settings import get_settings

# Prefect reads flow-level retry defaults from these when the flow decorator sets none;
# a deployment passes them to its runs through the process worker's `env` job variable.
RETRIES_ENV = "PREFECT_FLOWS_DEFAULT_RETRIES"
RETRY_DELAY_ENV = "PREFECT_FLOWS_DEFAULT_RETRY_DELAY_SECONDS"
# Prefect's list endpoints return at most this many items per call.
PREFECT_PAGE = 200
FINISHED: list[StateType] = [
    StateType.COMPLETED,
    StateType.FAILED,
    StateType.CRASHED,
    StateType.CANCELLED,
]
NOT_SCHEDULED: list[StateType] = [t for t in StateType if t != StateType.SCHEDULED]
STATS_WINDOW = 1000
NEXT_RUNS = 3
# Flow ids by (Prefect API, flow name): a flow is created once, not upserted per request.
_FLOW_IDS: dict[tuple[str, str], uuid.UUID] = {}


class SpecError(ValueError):
    """The spec is invalid; `errors` lists each bad field as FastAPI does (loc, msg, type)."""

    def __init__(self, errors: list[dict[str, Any]]):
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


class ScheduleNotFound(LookupError):
    def __init__(self, name: str):
        super().__init__(f"schedule {name!r} not found")
        self.name = name


class ScheduleExists(ValueError):
    def __init__(self, name: str):
        super().__init__(f"schedule {name!r} already exists")
        self.name = name


class Outcome(BaseModel):
    items_processed: int
    items_succeeded: int
    items_failed: int
    error: str | None
    metadata: dict[str, Any]

    @classmethod
    def of(cls, row: RunOutcome | None) -> Outcome | None:
        if row is None:
            return None
        return cls(
            items_processed=row.items_processed,
            items_succeeded=row.items_succeeded,
            items_failed=row.items_failed,
            error=row.error,
            metadata=row.meta,
        )


class RunView(BaseModel):
    """One flow run: Prefect's state and timings, and our outcome row."""

    id: uuid.UUID
    name: str
    schedule: str | None
    state_type: str | None
    state_name: str | None
    state_message: str | None = None
    expected_start_time: datetime | None
    start_time: datetime | None
    end_time: datetime | None
    duration_seconds: float | None
    parameters: dict[str, Any] = Field(default_factory=dict)
    tags: list[str] = Field(default_factory=list)
    outcome: Outcome | None = None


class ScheduleView(BaseModel):
    """A schedule as Prefect has it now."""

    name: str
    pipeline: str
    deployment_id: uuid.UUID
    description: str
    timing: Timing
    parameters: dict[str, Any]
    paused: bool
    tags: list[str]
    retries: int
    retry_delay_seconds: int
    concurrency_limit: int | None
    collision: str
    next_runs: list[datetime] = Field(
        default_factory=list,
        description="The next times the schedule fires (by Prefect's schedule maths); none "
        "while paused",
    )
    last_run: RunView | None = None
    created: datetime | None = None
    updated: datetime | None = None


class ScheduleStats(BaseModel):
    """Counters over a schedule's run history."""

    total_runs: int
    by_state: dict[str, int]
    success_rate: float | None
    mean_duration_seconds: float | None
    p95_duration_seconds: float | None
    items_processed: int
    items_succeeded: int
    items_failed: int
    last_run_at: datetime | None
    next_run_at: datetime | None


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override` laid over it, nested objects merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (nearest rank) of `values`, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def run_duration(run: FlowRun) -> float | None:
    if run.start_time and run.end_time:
        return (run.end_time - run.start_time).total_seconds()
    return run.total_run_time.total_seconds() if run.total_run_time else None


def run_view(run: FlowRun, schedule: str | None, outcome: RunOutcome | None) -> RunView:
    return RunView(
        id=run.id,
        name=run.name,
        schedule=schedule,
        state_type=run.state_type.value if run.state_type else None,
        state_name=run.state_name,
        state_message=run.state.message if run.state else None,
        expected_start_time=run.expected_start_time,
        start_time=run.start_time,
        end_time=run.end_time,
        duration_seconds=run_duration(run) if run.end_time else None,
        parameters=run.parameters,
        tags=list(run.tags),
        outcome=Outcome.of(outcome),
    )


def _prefix(errors: Sequence[Any], *loc: str) -> list[dict[str, Any]]:
    return [
        {"loc": [*loc, *e["loc"]], "msg": e["msg"], "type": e.get("type", "value_error")}
        for e in errors
    ]


def _schedules_active(deployment: DeploymentResponse) -> bool:
    """False when an operator paused every schedule (`prefect deployment schedule pause`)."""
    return not deployment.schedules or any(s.active for s in deployment.schedules)


def _env(spec: SpecSettings) -> dict[str, str]:
    return {RETRIES_ENV: str(spec.retries), RETRY_DELAY_ENV: str(spec.retry_delay_seconds)}


class ScheduleService:
    """Schedules over one Prefect client and our database (for run outcomes)."""

    def __init__(
        self,
        client: PrefectClient,
        engine: Engine,
        work_pool_name: str,
        writes: asyncio.Semaphore | None = None,
    ):
        self.client = client
        self.engine = engine
        self.work_pool_name = work_pool_name
        # Bounds our concurrent writes to Prefect: a burst of run-now requests otherwise
        # meets a SQLite-backed Prefect server mid-lock and gets 503s back.
        self.writes = writes or asyncio.Semaphore(4)

    # -- validation -------------------------------------------------------------------------

    async def validate(self, spec: ScheduleSpec) -> BaseModel:
        """The pipeline's parameters, validated; SpecError names every bad field."""
        pipeline = PIPELINES[spec.pipeline]
        try:
            params = pipeline.parameters.model_validate(spec.parameters)
        except ValidationError as exc:
            raise SpecError(_prefix(exc.errors(), "parameters")) from None
        errors: list[dict[str, Any]] = []
        for check in pipeline.checks:
            errors += await check(params)
        if errors:
            raise SpecError(errors)
        return params

    # -- reading ----------------------------------------------------------------------------

    async def _find(self, name: str) -> DeploymentResponse | None:
        found = await self.client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])),
            flow_filter=FlowFilter(name=FlowFilterName(any_=list(FLOW_TO_PIPELINE))),
            limit=1,
        )
        return found[0] if found else None

    async def _get(self, name: str) -> tuple[DeploymentResponse, Pipeline]:
        deployment = await self._find(name)
        if deployment is None:
            raise ScheduleNotFound(name)
        return deployment, self._pipeline_of(deployment)

    def _pipeline_of(self, deployment: DeploymentResponse) -> Pipeline:
        for tag in deployment.tags:
            if tag.startswith("pipeline:") and tag.removeprefix("pipeline:") in PIPELINES:
                return PIPELINES[tag.removeprefix("pipeline:")]
        entry = (deployment.entrypoint or "").replace(":", ".")
        return next((p for p in PIPELINES.values() if p.entrypoint == entry), PIPELINES["api_call"])

    async def _view(self, deployment: DeploymentResponse, pipeline: Pipeline) -> ScheduleView:
        """The schedule as Prefect has it, with the next times its schedule fires."""
        schedule = deployment.schedules[0] if deployment.schedules else None
        prefect_schedule = schedule.schedule if schedule else None
        if isinstance(prefect_schedule, NoSchedule):
            prefect_schedule = None
        env = (deployment.job_variables or {}).get("env") or {}
        options = deployment.concurrency_options
        paused = deployment.paused or not _schedules_active(deployment)
        return ScheduleView(
            name=deployment.name,
            pipeline=pipeline.name,
            deployment_id=deployment.id,
            description=deployment.description or "",
            timing=from_prefect_schedule(schedule.slug if schedule else None, prefect_schedule),
            parameters=deployment.parameters,
            paused=paused,
            tags=[t for t in deployment.tags if t != pipeline.tag],
            retries=int(env.get(RETRIES_ENV, 0)),
            retry_delay_seconds=int(env.get(RETRY_DELAY_ENV, 30)),
            concurrency_limit=deployment.global_concurrency_limit.limit
            if deployment.global_concurrency_limit
            else None,
            collision=options.collision_strategy.value.lower() if options else "enqueue",
            created=deployment.created,
            updated=deployment.updated,
            next_runs=[] if paused else await next_fire_times(prefect_schedule, NEXT_RUNS),
        )

    def _spec_of(self, view: ScheduleView) -> ScheduleSpec:
        return ScheduleSpec.model_construct(
            **view.model_dump(
                include={
                    "name",
                    "pipeline",
                    "description",
                    "parameters",
                    "paused",
                    "tags",
                    "retries",
                    "retry_delay_seconds",
                    "concurrency_limit",
                    "collision",
                }
            ),
            timing=view.timing,
        )

    async def _runs(
        self,
        deployment_ids: list[uuid.UUID],
        states: list[StateType],
        sort: FlowRunSort,
        limit: int,
        offset: int = 0,
    ) -> list[FlowRun]:
        return await self.client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=deployment_ids)),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states))
            ),
            sort=sort,
            limit=limit,
            offset=offset,
        )

    def _outcomes(self, runs: Sequence[FlowRun]) -> dict[uuid.UUID, RunOutcome]:
        with Session(self.engine) as session:
            return get_run_outcomes(session, (r.id for r in runs))

    async def get(self, name: str) -> ScheduleView:
        """One schedule with its next runs and last run."""
        deployment, pipeline = await self._get(name)
        view = await self._view(deployment, pipeline)
        last = await self._runs(
            [deployment.id], NOT_SCHEDULED, FlowRunSort.EXPECTED_START_TIME_DESC, 1
        )
        if last:
            view.last_run = run_view(last[0], name, self._outcomes(last).get(last[0].id))
        return view

    async def list_schedules(
        self,
        *,
        pipeline: str | None = None,
        paused: bool | None = None,
        tag: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[ScheduleView], int]:
        """A page of schedules (by name) and the total for the filter: one Prefect call when
        `offset` is a multiple of `limit`, else two at once."""
        flows = [PIPELINES[pipeline].flow_name] if pipeline in PIPELINES else list(FLOW_TO_PIPELINE)
        if pipeline is not None and pipeline not in PIPELINES:
            return [], 0
        deployments_filter: dict[str, Any] = {}
        if paused is not None:
            # Prefect's server filters on `paused`; its client model lacks the field.
            deployments_filter["paused"] = {"eq_": paused}
        if tag is not None:
            deployments_filter["tags"] = {"all_": [tag]}
        body: dict[str, Any] = {
            "flows": {"name": {"any_": flows}},
            "deployments": deployments_filter or None,
        }
        if offset % limit == 0:  # a whole page: Prefect answers it and the total in one call
            answer = await self.client.request(
                "POST",
                "/deployments/paginate",
                json={**body, "limit": limit, "page": offset // limit + 1, "sort": "NAME_ASC"},
            )
            data = answer.json()
            found, total = data["results"], data["count"]
        else:
            page, count = await asyncio.gather(
                self.client.request(
                    "POST",
                    "/deployments/filter",
                    json={**body, "limit": limit, "offset": offset, "sort": "NAME_ASC"},
                ),
                self.client.request("POST", "/deployments/count", json=body),
            )
            found, total = page.json(), count.json()
        deployments = [DeploymentResponse.model_validate(d) for d in found]
        views = [await self._view(d, self._pipeline_of(d)) for d in deployments]
        return views, int(total)

    # -- changing ---------------------------------------------------------------------------

    async def create(self, spec: ScheduleSpec) -> ScheduleView:
        """Create the schedule's deployment; nothing is created when the spec is invalid."""
        params = await self.validate(spec)
        if await self._find(spec.name) is not None:
            raise ScheduleExists(spec.name)
        return await self._apply(spec, params, paused=spec.paused)

    async def update(self, name: str, patch: SchedulePatch) -> ScheduleView:
        """Change a schedule in place; its pause state and run history stay."""
        deployment, pipeline = await self._get(name)
        return await self._update(deployment, pipeline, patch)

    async def put(self, spec: ScheduleSpec, patch: SchedulePatch) -> tuple[ScheduleView, bool]:
        """Create `spec`, or apply `patch` in place when a schedule of that name exists.

        One lookup decides (a service re-registering its job on every start is the common
        case); an existing schedule of another pipeline is a conflict. True when created.
        """
        deployment = await self._find(spec.name)
        if deployment is None:
            params = await self.validate(spec)
            return await self._apply(spec, params, paused=spec.paused), True
        pipeline = self._pipeline_of(deployment)
        if pipeline.name != spec.pipeline:
            raise ScheduleExists(spec.name)
        return await self._update(deployment, pipeline, patch), False

    async def _update(
        self, deployment: DeploymentResponse, pipeline: Pipeline, patch: SchedulePatch
    ) -> ScheduleView:
        current = self._spec_of(await self._view(deployment, pipeline))
        try:
            spec = ScheduleSpec.model_validate(patch.apply_to(current))
        except ValidationError as exc:
            raise SpecError(_prefix(exc.errors())) from None
        params = await self.validate(spec)
        return await self._apply(spec, params, paused=None, active=_schedules_active(deployment))

    async def _apply(
        self, spec: ScheduleSpec, params: BaseModel, paused: bool | None, active: bool = True
    ) -> ScheduleView:
        """Upsert the deployment and answer with what Prefect stored (no second read)."""
        pipeline = PIPELINES[spec.pipeline]
        schedule = to_prefect_schedule(spec.timing)
        fields: dict[str, Any] = {
            "name": spec.name,
            "description": spec.description,
            "entrypoint": pipeline.entrypoint,
            "parameters": params.model_dump(mode="json", exclude_none=True),
            "parameter_openapi_schema": _parameter_schema(pipeline),
            "schedules": [
                DeploymentScheduleCreate(schedule=schedule, active=active, slug=spec.timing.type)
            ]
            if schedule is not None
            else [],
            "tags": sorted({*spec.tags, pipeline.tag}),
            "concurrency_limit": spec.concurrency_limit,
            "job_variables": {"env": _env(spec)},
        }
        if spec.concurrency_limit:
            fields["concurrency_options"] = ConcurrencyOptions(
                collision_strategy=ConcurrencyLimitStrategy(spec.collision.upper())
            )
        if paused is not None:
            # Unset, Prefect's upsert keeps the deployment's pause state.
            fields["paused"] = paused
        async with self.writes:
            deployment = await self._upsert_deployment(pipeline.flow_name, fields)
        return await self._view(deployment, pipeline)

    async def _upsert_deployment(
        self, flow_name: str, fields: dict[str, Any]
    ) -> DeploymentResponse:
        """Prefect's create-deployment call (an upsert on flow and name), keeping its answer.

        `PrefectClient.create_deployment` sends the same body but returns only the id, which
        would cost a second read; the flow's id is looked up once per process, not per call.
        """
        key = (str(self.client.api_url), flow_name)
        cached = _FLOW_IDS.get(key)
        try:
            return await self._post_deployment(cached or await self._flow_id(key), fields)
        except httpx.HTTPStatusError as exc:
            if cached is None or exc.response.status_code not in (404, 409):
                raise
        # The cached flow was deleted since (an operator's `prefect flow delete`): create it again.
        return await self._post_deployment(await self._flow_id(key), fields)

    async def _flow_id(self, key: tuple[str, str]) -> uuid.UUID:
        _FLOW_IDS[key] = await self.client.create_flow_from_name(key[1])
        return _FLOW_IDS[key]

    async def _post_deployment(
        self, flow_id: uuid.UUID, fields: dict[str, Any]
    ) -> DeploymentResponse:
        body = DeploymentCreate(flow_id=flow_id, **fields)
        body.work_pool_name = self.work_pool_name
        response = await self.client.request(
            "POST", "/deployments/", json=body.model_dump(mode="json", exclude_unset=True)
        )
        return DeploymentResponse.model_validate(response.json())

    async def pause(self, name: str) -> ScheduleView:
        """Pause: Prefect stops scheduling and deletes the future scheduled runs. Idempotent."""
        deployment, _ = await self._get(name)
        await self.client.pause_deployment(deployment.id)
        return await self.get(name)

    async def resume(self, name: str) -> ScheduleView:
        """Resume: Prefect schedules the next runs again. Idempotent."""
        deployment, _ = await self._get(name)
        await self.client.resume_deployment(deployment.id)
        for schedule in deployment.schedules:
            if not schedule.active:
                await self.client.update_deployment_schedule(
                    deployment.id, schedule.id, active=True
                )
        return await self.get(name)

    async def run_now(
        self,
        name: str,
        parameters: dict[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> uuid.UUID:
        """Start a run now, with `parameters` merged over the schedule's own (validated).

        With an idempotency key, a repeated request (a client retrying after a timeout or a
        503) gets the run the first one created instead of a second run.
        """
        deployment, pipeline = await self._get(name)
        merged = deep_merge(deployment.parameters, parameters or {})
        try:
            params = pipeline.parameters.model_validate(merged)
        except ValidationError as exc:
            raise SpecError(_prefix(exc.errors(), "parameters")) from None
        async with self.writes:
            run = await self.client.create_flow_run_from_deployment(
                deployment.id,
                parameters=params.model_dump(mode="json", exclude_none=True),
                state=Scheduled(),
                tags=["trigger:manual"],
                idempotency_key=f"run-now:{deployment.id}:{idempotency_key}"
                if idempotency_key
                else None,
            )
        return run.id

    async def delete(self, name: str) -> None:
        """Delete the deployment (and its scheduled runs); domain results stay."""
        deployment, _ = await self._get(name)
        try:
            await self.client.delete_deployment(deployment.id)
        except ObjectNotFound:
            raise ScheduleNotFound(name) from None

    # -- history ----------------------------------------------------------------------------

    async def runs(
        self, name: str, *, state: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[RunView], int]:
        """Run history newest first (scheduled-but-not-started runs only when asked for)."""
        deployment, _ = await self._get(name)
        states = [StateType(state.upper())] if state else NOT_SCHEDULED
        run_filter = FlowRunFilter(
            state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states))
        )
        dep_filter = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))
        page: list[FlowRun] = []
        while len(page) < limit:
            chunk = await self._runs(
                [deployment.id],
                states,
                FlowRunSort.EXPECTED_START_TIME_DESC,
                min(PREFECT_PAGE, limit - len(page)),
                offset + len(page),
            )
            page += chunk
            if len(chunk) < PREFECT_PAGE:
                break
        total = await self.client.count_flow_runs(
            deployment_filter=dep_filter, flow_run_filter=run_filter
        )
        outcomes = self._outcomes(page)
        return [run_view(r, name, outcomes.get(r.id)) for r in page], total

    async def get_run(self, flow_run_id: uuid.UUID) -> RunView:
        run = await self.client.read_flow_run(flow_run_id)
        schedule = None
        if run.deployment_id:
            with contextlib.suppress(ObjectNotFound):
                schedule = (await self.client.read_deployment(run.deployment_id)).name
        return run_view(run, schedule, self._outcomes([run]).get(run.id))

    async def stats(self, name: str) -> ScheduleStats:
        """Totals by state (exact), durations over the newest finished runs, items from outcomes."""
        deployment, pipeline = await self._get(name)
        dep_filter = DeploymentFilter(id=DeploymentFilterId(any_=[deployment.id]))

        async def count(state: StateType) -> int:
            return await self.client.count_flow_runs(
                deployment_filter=dep_filter,
                flow_run_filter=FlowRunFilter(
                    state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[state]))
                ),
            )

        counts = await asyncio.gather(*(count(s) for s in StateType))
        by_state = {s.value: n for s, n in zip(StateType, counts, strict=True) if n}
        finished: list[FlowRun] = []
        while len(finished) < STATS_WINDOW:
            chunk = await self._runs(
                [deployment.id],
                FINISHED,
                FlowRunSort.EXPECTED_START_TIME_DESC,
                PREFECT_PAGE,
                len(finished),
            )
            finished += chunk
            if len(chunk) < PREFECT_PAGE:
                break
        durations = [d for r in finished if (d := run_duration(r)) is not None]
        done = sum(by_state.get(s.value, 0) for s in FINISHED)
        upcoming = (await self._view(deployment, pipeline)).next_runs
        with Session(self.engine) as session:
            items = outcome_totals(session, name)
        return ScheduleStats(
            total_runs=sum(by_state.values()),
            by_state=by_state,
            success_rate=by_state.get("COMPLETED", 0) / done if done else None,
            mean_duration_seconds=sum(durations) / len(durations) if durations else None,
            p95_duration_seconds=percentile(durations, 95),
            last_run_at=finished[0].start_time or finished[0].expected_start_time
            if finished
            else None,
            next_run_at=upcoming[0] if upcoming else None,
            **items,
        )


def process_job_template(flow_run_command: str | None) -> dict[str, Any]:
    """The process worker's job template, with the command each flow run starts with.

    Without a command, Prefect 3.8's process worker starts a workspace supervisor process
    that imports Prefect and then execs the engine, which imports it again: two imports
    (2-4 s of CPU each here) before a flow starts. With the engine command set, the worker
    resolves the flow itself and starts one process per run.
    """
    from prefect.workers.process import ProcessWorker

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
    """The process work pool our deployments run on, with a concurrency limit that fits.

    Each argument defaults to its setting (WORK_POOL_NAME, WORK_POOL_CONCURRENCY,
    FLOW_RUN_COMMAND); idempotent: an existing pool is brought to these values.
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


_SCHEMAS: dict[str, dict[str, Any]] = {}


def _parameter_schema(pipeline: Pipeline) -> dict[str, Any]:
    """The flow's parameter schema, so the Prefect UI's run form shows the real fields."""
    if pipeline.name not in _SCHEMAS:
        from prefect.utilities.importtools import import_object

        flow = import_object(pipeline.entrypoint)
        _SCHEMAS[pipeline.name] = parameter_schema(flow.fn).model_dump_for_openapi()
    return _SCHEMAS[pipeline.name]
