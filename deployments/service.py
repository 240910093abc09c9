"""Schedules as Prefect deployments: apply a spec, pause, resume, run now, delete, history, stats.

Everything goes through Prefect's Python client; Prefect's server is the only copy of a
schedule, so what operators change in the UI or CLI is what this service reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import Any

from prefect.blocks.webhook import Webhook
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateName,
)
from prefect.client.schemas.objects import (
    ConcurrencyLimitStrategy,
    ConcurrencyOptions,
    FlowRun,
    State,
    StateType,
)
from prefect.client.schemas.responses import DeploymentResponse, SetStateStatus
from prefect.client.schemas.schedules import NoSchedule
from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError
from prefect.settings import get_current_settings
from prefect.states import Cancelled, Cancelling, Scheduled
from pydantic import BaseModel, SecretStr, ValidationError
from sqlalchemy.engine import Engine
from sqlmodel import Session

from db.crud import get_run_outcomes, outcome_totals
from db.models import RunOutcome
from deployments.alerts import (
    JSON_HEADERS,
    alert_automations,
    alert_block_name,
    median_duration,
    stuck_after,
)
from deployments.catchup import (
    CALLBACK_BLOCK,
    CALLBACK_PATH,
    catchup_automations,
    decide_for_run,
)
from deployments.controls import (
    IGNORE_WINDOWS_TAG,
    MANUAL_TAG,
    MISSED,
    RUN,
    SKIP_TAG,
    SUPERSEDED,
    Decision,
    RunControls,
)
from deployments.dependencies import dependency_automations, find_cycle
from deployments.descriptions import default_description, schedule_slug
from deployments.errors import (
    FieldErrors,
    IdempotencyConflict,
    RunConflict,
    ScheduleExists,
    ScheduleNotFound,
    SpecError,
    field_error,
    prefixed,
)
from deployments.job_template import CONTROLS, spec_settings_of, spec_variables
from deployments.pipelines import FLOW_TO_PIPELINE, PIPELINES, Pipeline
from deployments.prefect_api import (
    count_runs,
    ensure_limits,
    late_runs_after,
    page_deployments,
    read_runs,
    scheduled_runs_between,
    upsert_deployment,
)
from deployments.prefect_schedules import fire_times, schedule_interval, to_prefect_schedule
from deployments.spec import Alerts, SchedulePatch, ScheduleSpec, aware
from deployments.stats import percentile
from deployments.views import (
    RunView,
    ScheduleStats,
    ScheduleView,
    Unreadable,
    run_duration,
    run_view,
    schedule_view,
    schedules_active,
    spec_of,
)
from flows.http import describe_error
from settings import get_settings

FINISHED: list[StateType] = [
    StateType.COMPLETED,
    StateType.FAILED,
    StateType.CRASHED,
    StateType.CANCELLED,
]
NOT_SCHEDULED: list[StateType] = [t for t in StateType if t != StateType.SCHEDULED]
RETRYABLE = (StateType.FAILED, StateType.CRASHED, StateType.CANCELLED)
logger = logging.getLogger(__name__)
# The deployment id and pipeline of each schedule run-now was asked for, per Prefect API and
# scope: a deployment's id never changes; a deleted one answers 404 and is read again.
_RUN_TARGETS: dict[tuple[str, str, str | None], tuple[uuid.UUID, str]] = {}


def parameters_digest(parameters: dict[str, Any] | None) -> str:
    """A short fingerprint of a run-now's parameter overrides (none: the same as {})."""
    canonical = json.dumps(parameters or {}, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


STATS_WINDOW = 1000
# Late runs our API catches up at start-up (the rest as their automations fire).
MAX_LATE_CAUGHT_UP = 200
# Prefect reads in flight at once when a list fills in each schedule's last run.
LAST_RUN_READS = 8
# A change given as a function of the schedule's current spec (e.g. "keep its time zone").
PatchOf = Callable[[ScheduleSpec], SchedulePatch]


def deep_merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """`base` with `override` laid over it, nested objects merged key by key."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class ScheduleService:
    """Schedules over one Prefect client and our database (for run outcomes).

    Scoped to one pipeline (`pipeline=`), it sees only that pipeline's schedules: another
    pipeline's is "not found", named with `noun` (a compatible API's word for a schedule).
    """

    def __init__(
        self,
        client: PrefectClient,
        engine: Engine,
        work_pool_name: str,
        writes: asyncio.Semaphore | None = None,
        *,
        pipeline: str | None = None,
        noun: str = "schedule",
    ):
        self.client = client
        self.engine = engine
        self.work_pool_name = work_pool_name
        # Bounds our concurrent writes to Prefect: a burst of run-now requests otherwise
        # meets a SQLite-backed Prefect server mid-lock and gets 503s back.
        self.writes = writes or asyncio.Semaphore(4)
        self.pipeline = pipeline
        self.noun = noun
        # What by_id read, for the first call by name that follows (a service is per request).
        self._just_read: dict[str, DeploymentResponse] = {}

    # -- validation -------------------------------------------------------------------------

    async def validate(self, spec: ScheduleSpec) -> BaseModel:
        """The pipeline's parameters, validated; SpecError names every bad field."""
        pipeline = PIPELINES[spec.pipeline]
        params = _parameters(pipeline, spec.parameters)
        errors = [e for check in pipeline.checks for e in await check(params)]
        errors += await self._dependency_errors(spec)
        errors += await self._alert_errors(spec)
        if errors:
            raise SpecError(errors)
        return params

    async def _dependency_errors(self, spec: ScheduleSpec) -> FieldErrors:
        """`depends_on` names existing schedules, not this one, and closes no cycle."""
        if not spec.depends_on:
            return []
        errors, graph = [], {}
        for i, dependency in enumerate(spec.depends_on):
            if dependency == spec.name:
                errors.append(field_error(("depends_on", i), "a schedule cannot depend on itself"))
            elif (found := await self.find(dependency)) is None:
                errors.append(field_error(("depends_on", i), f"no schedule named {dependency!r}"))
            else:
                graph[dependency] = depends_on_of(found)
        if errors:
            return errors
        # Walk on from the dependencies through theirs, reading each schedule once.
        pending = [d for deps in graph.values() for d in deps if d not in graph]
        while pending:
            name = pending.pop()
            if name in graph or name == spec.name:
                continue
            found = await self.find(name)
            graph[name] = depends_on_of(found) if found else []
            pending.extend(d for d in graph[name] if d not in graph)
        cycle = find_cycle(spec.name, spec.depends_on, graph)
        if cycle:
            path = " -> ".join(cycle)
            return [field_error(("depends_on",), f"a dependency cycle: {path}")]
        return []

    async def _alert_errors(self, spec: ScheduleSpec) -> FieldErrors:
        """`alerts.block` names a Webhook block Prefect has."""
        if spec.alerts is None or spec.alerts.block is None:
            return []
        if await self._webhook_block_id(spec.alerts.block) is None:
            message = f"no Prefect Webhook block named {spec.alerts.block!r}"
            return [field_error(("alerts", "block"), message)]
        return []

    async def _webhook_block_id(self, name: str) -> uuid.UUID | None:
        try:
            found = await self.client.read_block_document_by_name(name, "webhook")
        except ObjectNotFound:
            return None
        return found.id

    # -- reading ----------------------------------------------------------------------------

    async def find(self, name: str) -> DeploymentResponse | None:
        """The deployment of schedule `name` (of any of our pipelines), or None."""
        found = await self.client.read_deployments(
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[name])),
            flow_filter=FlowFilter(name=FlowFilterName(any_=list(FLOW_TO_PIPELINE))),
            limit=1,
        )
        return found[0] if found else None

    async def _get(self, name: str) -> tuple[DeploymentResponse, Pipeline]:
        # A deployment by_id just read (this request's id lookup) is used once, not read again.
        deployment = self._just_read.pop(name, None) or await self.find(name)
        if deployment is None:
            raise ScheduleNotFound(name, self.noun)
        pipeline = pipeline_of(deployment)
        if self.pipeline is not None and pipeline.name != self.pipeline:
            raise ScheduleNotFound(name, self.noun)
        return deployment, pipeline

    async def by_id(self, deployment_id: uuid.UUID) -> DeploymentResponse:
        """The deployment of one of this service's schedules by its id (a compatible API's
        job id); ScheduleNotFound for another pipeline's or none."""
        try:
            deployment = await self.client.read_deployment(deployment_id)
        except ObjectNotFound:
            raise ScheduleNotFound(str(deployment_id), self.noun) from None
        if self.pipeline is not None and pipeline_of(deployment).name != self.pipeline:
            raise ScheduleNotFound(str(deployment_id), self.noun)
        self._just_read[deployment.name] = deployment
        return deployment

    def _outcomes(self, runs: Sequence[FlowRun]) -> dict[uuid.UUID, RunOutcome]:
        with Session(self.engine) as session:
            return get_run_outcomes(session, (r.id for r in runs))

    async def get(self, name: str) -> ScheduleView:
        """One schedule with its next runs and last run."""
        deployment, pipeline = await self._get(name)
        view = await schedule_view(deployment, pipeline)
        await self._add_last_runs([view])
        return view

    async def _add_last_runs(self, views: list[ScheduleView]) -> None:
        """Each view's last run (the newest not merely scheduled), the same for one schedule
        and for a list: a Prefect read per schedule, a few at a time, and one query of ours."""
        gate = asyncio.Semaphore(LAST_RUN_READS)

        async def last(view: ScheduleView) -> FlowRun | None:
            async with gate:
                runs = await read_runs(self.client, view.deployment_id, NOT_SCHEDULED, 1)
            return runs[0] if runs else None

        found = await asyncio.gather(*(last(view) for view in views))
        ran = [run for run in found if run is not None]
        outcomes = self._outcomes(ran) if ran else {}
        for view, run in zip(views, found, strict=True):
            if run is not None:
                view.last_run = run_view(run, view.name, outcomes.get(run.id))

    async def list_schedules(
        self,
        *,
        pipeline: str | None = None,
        paused: bool | None = None,
        tag: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[ScheduleView], int, list[Unreadable]]:
        """A page of schedules (by name), the total for the filter, and the deployments of
        the page that could not be read as schedules (each logged; the rest are listed)."""
        pipeline = pipeline or self.pipeline
        if pipeline is not None and pipeline not in PIPELINES:
            return [], 0, []
        flows = [PIPELINES[pipeline].flow_name] if pipeline else list(FLOW_TO_PIPELINE)
        deployments_filter: dict[str, Any] = {}
        if paused is not None:
            deployments_filter["paused"] = {"eq_": paused}
        if tag is not None:
            deployments_filter["tags"] = {"all_": [tag]}
        body = {"flows": {"name": {"any_": flows}}, "deployments": deployments_filter or None}
        found, total = await page_deployments(self.client, body, limit, offset)
        views: list[ScheduleView] = []
        unreadable: list[Unreadable] = []
        for item in found:
            try:
                deployment = DeploymentResponse.model_validate(item)
                views.append(await schedule_view(deployment, pipeline_of(deployment)))
            except Exception as exc:  # one broken deployment must not hide the others
                name = str(item.get("name", item.get("id", "?")))
                logger.warning("Deployment %r is not a readable schedule: %s", name, exc)
                unreadable.append(Unreadable(name=name, error=describe_error(exc)))
        await self._add_last_runs(views)
        return views, total, unreadable

    # -- changing ---------------------------------------------------------------------------

    async def create(self, spec: ScheduleSpec) -> ScheduleView:
        """Create the schedule's deployment; nothing is created when the spec is invalid."""
        params = await self.validate(spec)
        if await self.find(spec.name) is not None:
            raise ScheduleExists(spec.name)
        return await self._apply(spec, params, paused=spec.paused)

    async def update(self, name: str, patch: SchedulePatch | PatchOf) -> ScheduleView:
        """Change a schedule in place; its pause state and run history stay."""
        deployment, pipeline = await self._get(name)
        return await self._update(deployment, pipeline, patch)

    async def put(self, spec: ScheduleSpec, patch: SchedulePatch) -> tuple[ScheduleView, bool]:
        """Create `spec`, or apply `patch` in place when a schedule of that name exists.

        One lookup decides (a service re-registering its job on every start is the common
        case); an existing schedule of another pipeline is a conflict. True when created.
        """
        deployment = await self.find(spec.name)
        if deployment is None:
            params = await self.validate(spec)
            return await self._apply(spec, params, paused=spec.paused), True
        pipeline = pipeline_of(deployment)
        if pipeline.name != spec.pipeline:
            raise ScheduleExists(spec.name)
        return await self._update(deployment, pipeline, patch), False

    async def _update(
        self, deployment: DeploymentResponse, pipeline: Pipeline, patch: SchedulePatch | PatchOf
    ) -> ScheduleView:
        current = spec_of(await schedule_view(deployment, pipeline))
        try:
            change = patch if isinstance(patch, SchedulePatch) else patch(current)
            spec = ScheduleSpec.model_validate(change.apply_to(current))
        except ValidationError as exc:
            raise SpecError(prefixed(exc.errors())) from None
        params = await self.validate(spec)
        active = schedules_active(deployment)
        return await self._apply(spec, params, paused=None, active=active, previous=current)

    async def _apply(
        self,
        spec: ScheduleSpec,
        params: BaseModel,
        paused: bool | None,
        active: bool = True,
        previous: ScheduleSpec | None = None,
    ) -> ScheduleView:
        """Upsert the deployment and its automations, and answer with what Prefect stored
        (no second read). `previous`: the spec it replaces."""
        pipeline = PIPELINES[spec.pipeline]
        block_id = None
        if spec.alerts is not None:
            spec, block_id = await self._alerts_in_a_block(spec)
        fields = deployment_fields(spec, pipeline, params, active)
        if spec.limits or spec.rate_limit:
            size = get_settings().default_limit_size
            await ensure_limits(self.client, spec.limits, spec.rate_limit, size)
        if paused is not None:
            # Unset, Prefect's upsert keeps the deployment's pause state.
            fields["paused"] = paused
        async with self.writes:
            deployment = await upsert_deployment(
                self.client, self.work_pool_name, pipeline.flow_name, fields
            )
            if has_automations(spec) or (previous and has_automations(previous)):
                await self._sync_automations(deployment.id, spec, block_id)
        return await schedule_view(deployment, pipeline)

    async def _alerts_in_a_block(self, spec: ScheduleSpec) -> tuple[ScheduleSpec, uuid.UUID]:
        """The spec with its alert webhook kept in a Prefect Webhook block (the URL secret),
        named in its place; and the block's id."""
        assert spec.alerts is not None
        if spec.alerts.webhook is None:
            block_id = await self._webhook_block_id(spec.alerts.block or "")
            if block_id is None:  # deleted since the spec was checked
                raise SpecError([field_error(("alerts", "block"), "the block is gone")])
            return spec, block_id
        name = alert_block_name(spec.name)
        block = Webhook(method="POST", url=SecretStr(spec.alerts.webhook), headers=JSON_HEADERS)
        block_id = await block.asave(name, overwrite=True, client=self.client)
        alerts = Alerts(on=spec.alerts.on, block=name)
        return spec.model_copy(update={"alerts": alerts}), block_id

    async def _catchup_callback_block(self) -> uuid.UUID:
        """The Webhook block catch-up automations call our API with (made or brought up to
        date: our URL and, with API keys, the first key as its bearer, both kept secret)."""
        settings = get_settings()
        headers = dict(JSON_HEADERS)
        if settings.api_key_list:
            headers["Authorization"] = f"Bearer {settings.api_key_list[0]}"
        url = settings.public_api_url.rstrip("/") + CALLBACK_PATH
        block = Webhook(method="POST", url=SecretStr(url), headers=headers)
        return await block.asave(CALLBACK_BLOCK, overwrite=True, client=self.client)

    async def catch_up(self, flow_run_id: uuid.UUID) -> Decision:
        """Apply its schedule's catch-up policy to a run no worker took (a catch-up automation
        asks): the worker's own decision, of which only a catch-up cancel is acted on here."""
        run = await self.client.read_flow_run(flow_run_id)
        if run.state is None or not run.state.is_scheduled() or run.deployment_id is None:
            return RUN  # taken meanwhile, or not a schedule's run
        deployment = await self.client.read_deployment(run.deployment_id)
        variables = {**(deployment.job_variables or {}), **(run.job_variables or {})}
        try:
            controls = RunControls.model_validate(variables.get(CONTROLS) or {})
        except ValidationError:
            return RUN
        decision = await decide_for_run(self.client, run, controls)
        if decision.action != "cancel" or decision.name not in (MISSED, SUPERSEDED):
            return RUN
        state: State[Any] = Cancelled(name=decision.name, message=decision.reason)
        async with self.writes:
            await self.client.set_flow_run_state(flow_run_id, state, force=True)
        logger.info("Flow run %s of %s: %s", flow_run_id, deployment.name, decision.reason)
        return decision

    async def catch_up_late_runs(self) -> int:
        """`catch_up` for every Late run of our schedules (those that went Late while our API
        was down, when it starts); how many were ended."""
        late = await self.client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=list(FLOW_TO_PIPELINE))),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Late"]))
            ),
            limit=MAX_LATE_CAUGHT_UP,
        )
        ended = 0
        for run in late:
            with contextlib.suppress(ObjectNotFound):
                ended += (await self.catch_up(run.id)).action == "cancel"
        return ended

    async def _sync_automations(
        self, deployment_id: uuid.UUID, spec: ScheduleSpec, block_id: uuid.UUID | None
    ) -> None:
        """The deployment's own automations (its triggers and alerts) made again from the spec."""
        owner = f"prefect.deployment.{deployment_id}"
        await self.client.delete_resource_owned_automations(owner)
        flows = list(FLOW_TO_PIPELINE)
        wanted = dependency_automations(str(deployment_id), spec.name, spec.depends_on, flows)
        if spec.catchup.policy != "all":
            interval = await schedule_interval(to_prefect_schedule(spec.timing))
            callback = str(await self._catchup_callback_block())
            wanted += catchup_automations(
                str(deployment_id), spec.name, spec.catchup, interval, late_runs_after(), callback
            )
        if spec.alerts is not None and block_id is not None:
            median = (
                None if spec.timeout_seconds else await median_duration(self.client, deployment_id)
            )
            default = get_settings().alert_stuck_after_seconds
            after = stuck_after(spec.timeout_seconds, median, default)
            wanted += alert_automations(
                str(deployment_id), spec.name, spec.alerts.on, str(block_id), after
            )
        for automation in wanted:
            await self.client.create_automation(automation)

    @contextlib.contextmanager
    def _gone_is_not_found(self, name: str) -> Iterator[None]:
        """A deployment deleted between our read and our write (a racing DELETE) is a 404."""
        try:
            yield
        except ObjectNotFound:
            raise ScheduleNotFound(name, self.noun) from None
        except PrefectHTTPStatusError as exc:
            if exc.response.status_code == 404:
                raise ScheduleNotFound(name, self.noun) from None
            raise

    async def pause(self, name: str) -> ScheduleView:
        """Pause: Prefect stops scheduling and deletes the future scheduled runs. Idempotent."""
        deployment, _ = await self._get(name)
        with self._gone_is_not_found(name):
            await self.client.pause_deployment(deployment.id)
        return await self.get(name)

    async def resume(self, name: str) -> ScheduleView:
        """Resume: Prefect schedules the next runs again. Idempotent."""
        deployment, _ = await self._get(name)
        with self._gone_is_not_found(name):
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
        *,
        ignore_windows: bool = False,
    ) -> uuid.UUID:
        """Start a run now, with `parameters` merged over the schedule's own (validated).

        Without parameters it is one Prefect call once this process has seen the schedule
        (its deployment id is kept; Prefect gives the run the deployment's parameters, which
        were validated when they were set). With an idempotency key, a repeated request (a
        client retrying after a timeout or a 503) gets the run the first one created, not a
        second one; the same key with other parameters is refused (IdempotencyConflict).
        `ignore_windows` starts it even outside the schedule's execution windows.
        """
        target = None if parameters else _RUN_TARGETS.get(self._target_key(name))
        if target is None:
            deployment, pipeline = await self._get(name)
            merged = deep_merge(deployment.parameters, parameters or {})
            sent: dict[str, Any] | None = _parameters(pipeline, merged).model_dump(
                mode="json", exclude_none=True
            )
            target = (deployment.id, pipeline.name)
            _RUN_TARGETS[self._target_key(name)] = target
        else:
            sent = None  # the deployment's own
        asked = f"params:{parameters_digest(parameters)}"
        try:
            async with self.writes:
                run = await self.client.create_flow_run_from_deployment(
                    target[0],
                    parameters=sent,
                    state=Scheduled(),
                    tags=[MANUAL_TAG, asked, *([IGNORE_WINDOWS_TAG] if ignore_windows else [])],
                    idempotency_key=f"run-now:{target[0]}:{idempotency_key}"
                    if idempotency_key
                    else None,
                )
        except (ObjectNotFound, PrefectHTTPStatusError) as exc:
            gone = isinstance(exc, ObjectNotFound) or exc.response.status_code == 404
            if not gone or _RUN_TARGETS.pop(self._target_key(name), None) is None:
                raise
            # Deleted since: read it again.
            return await self.run_now(
                name, parameters, idempotency_key, ignore_windows=ignore_windows
            )
        if idempotency_key and asked not in (run.tags or []):
            raise IdempotencyConflict(idempotency_key)
        return run.id

    async def backfill(
        self, name: str, start: datetime, end: datetime, max_runs: int
    ) -> list[FlowRun]:
        """The runs the schedule would have made from `start` (inclusive) to `end`
        (exclusive), each Scheduled at its time (which its flow reads from prefect.runtime).

        Prefect's own backfill (`POST /deployments/{id}/schedule`, one request): the runs
        are the ones its scheduler makes, with the scheduler's idempotency keys (deployment,
        schedule, time), so asking again, or the scheduler itself, never makes one twice.
        More than `max_runs` (MAX_BACKFILL_RUNS) is refused, as a range that is empty or
        backwards, or a schedule without timing or paused; a naive time is read in the
        schedule's time zone.
        """
        deployment, _ = await self._get(name)
        schedule = deployment.schedules[0].schedule if deployment.schedules else None
        if schedule is None or isinstance(schedule, NoSchedule):
            raise SpecError([field_error(("name",), "a manual schedule has no runs to backfill")])
        if deployment.paused or not schedules_active(deployment):
            raise SpecError([field_error(("name",), "the schedule is paused: resume it first")])
        zone = getattr(schedule, "timezone", None) or "UTC"
        start, end = aware(start, zone), aware(end, zone)
        if end <= start:
            raise SpecError([field_error(("end",), "end must be after start")])
        times = [t for t in await fire_times(schedule, start, max_runs + 1, end) if t < end]
        if len(times) > max_runs:
            message = f"the range holds more than {max_runs} runs (MAX_BACKFILL_RUNS): shorten it"
            raise SpecError([field_error(("end",), message)])
        if not times:
            return []
        last = times[-1]
        async with self.writes:
            await self.client.request(
                "POST",
                "/deployments/{id}/schedule",
                path_params={"id": deployment.id},
                json={
                    "start_time": start.isoformat(),
                    "end_time": last.isoformat(),
                    # Prefect stops at the first time that meets both minimums.
                    "min_runs": len(times),
                    "min_time": (last - start).total_seconds(),
                    "max_runs": len(times),
                },
            )
        runs = await scheduled_runs_between(self.client, deployment.id, start, last)
        wanted = set(times)
        found = [r for r in runs if r.expected_start_time in wanted]
        logger.info("backfill of %s: %d run(s) from %s to %s", name, len(found), start, end)
        return found

    def _target_key(self, name: str) -> tuple[str, str, str | None]:
        return (str(self.client.api_url), name, self.pipeline)

    async def delete(self, name: str) -> None:
        """Delete the deployment (and its scheduled runs); domain results stay."""
        deployment, _ = await self._get(name)
        with self._gone_is_not_found(name):
            await self.client.delete_deployment(deployment.id)
        # Prefect leaves a deleted deployment's own automations (its triggers) behind.
        await self.client.delete_resource_owned_automations(f"prefect.deployment.{deployment.id}")
        alerts = spec_settings_of(deployment.job_variables).get("alerts") or {}
        ours = alert_block_name(name)
        if alerts.get("block") == ours and (block_id := await self._webhook_block_id(ours)):
            with contextlib.suppress(ObjectNotFound):
                await self.client.delete_block_document(block_id)

    # -- history ----------------------------------------------------------------------------

    async def runs(
        self, name: str, *, state: str | None = None, limit: int = 50, offset: int = 0
    ) -> tuple[list[RunView], int]:
        """Run history newest first (scheduled-but-not-started runs only when asked for)."""
        deployment, _ = await self._get(name)
        states = [StateType(state.upper())] if state else NOT_SCHEDULED
        page, total = await asyncio.gather(
            read_runs(self.client, deployment.id, states, limit, offset),
            count_runs(self.client, deployment.id, states),
        )
        outcomes = self._outcomes(page)
        return [run_view(r, name, outcomes.get(r.id)) for r in page], total

    async def get_run(self, flow_run_id: uuid.UUID) -> RunView:
        """One flow run of any deployment, with its outcome."""
        run = await self.client.read_flow_run(flow_run_id)
        schedule = None
        if run.deployment_id:
            with contextlib.suppress(ObjectNotFound):
                schedule = (await self.client.read_deployment(run.deployment_id)).name
        return run_view(run, schedule, self._outcomes([run]).get(run.id))

    async def cancel_run(self, flow_run_id: uuid.UUID) -> RunView:
        """Cancel a run: a scheduled one ends Cancelled at once; a pending or running one goes
        Cancelling, and its worker stops the process and ends it Cancelled (Prefect's way)."""
        run = await self.client.read_flow_run(flow_run_id)
        kind = run.state_type
        state: State[Any]
        if kind in (StateType.SCHEDULED, StateType.PAUSED):
            state = Cancelled(message="cancelled through our API before it started")
        elif kind in (StateType.PENDING, StateType.RUNNING):
            state = Cancelling(message="cancelled through our API")
        else:
            raise RunConflict(f"flow run {flow_run_id} is {run.state_name}: nothing to cancel")
        async with self.writes:
            answer = await self.client.set_flow_run_state(flow_run_id, state)
        if answer.status != SetStateStatus.ACCEPT:
            raise RunConflict(f"Prefect did not cancel flow run {flow_run_id}: {answer.details}")
        return await self.get_run(flow_run_id)

    async def retry_run(self, flow_run_id: uuid.UUID) -> uuid.UUID:
        """A new run of a failed, crashed or cancelled run's deployment with its parameters.
        Asked twice, it answers the same new run (an idempotency key of the run retried)."""
        run = await self.client.read_flow_run(flow_run_id)
        if run.state_type not in RETRYABLE:
            raise RunConflict(
                f"flow run {flow_run_id} is {run.state_name}: only a failed, crashed or "
                "cancelled run is retried"
            )
        if run.deployment_id is None:
            raise RunConflict(f"flow run {flow_run_id} has no deployment to run again")
        async with self.writes:
            again = await self.client.create_flow_run_from_deployment(
                run.deployment_id,
                parameters=run.parameters,
                state=Scheduled(),
                tags=[MANUAL_TAG, f"retry-of:{flow_run_id}"],
                idempotency_key=f"retry:{flow_run_id}",
            )
        return again.id

    async def stats(self, name: str) -> ScheduleStats:
        """Totals by state (exact), durations over the newest finished runs, items from outcomes."""
        return (await self.details(name))[1]

    async def details(self, name: str) -> tuple[ScheduleView, ScheduleStats]:
        """The schedule and its stats, from one lookup."""
        deployment, pipeline = await self._get(name)
        counts = await asyncio.gather(
            *(count_runs(self.client, deployment.id, [s]) for s in StateType)
        )
        by_state = {s.value: n for s, n in zip(StateType, counts, strict=True) if n}
        finished = await read_runs(self.client, deployment.id, FINISHED, STATS_WINDOW)
        durations = [d for r in finished if (d := run_duration(r)) is not None]
        done = sum(by_state.get(s.value, 0) for s in FINISHED)
        view = await schedule_view(deployment, pipeline)
        with Session(self.engine) as session:
            items = outcome_totals(session, name)
        stats = ScheduleStats(
            total_runs=sum(by_state.values()),
            by_state=by_state,
            success_rate=by_state.get("COMPLETED", 0) / done if done else None,
            mean_duration_seconds=sum(durations) / len(durations) if durations else None,
            p95_duration_seconds=percentile(durations, 95),
            last_run_at=finished[0].start_time or finished[0].expected_start_time
            if finished
            else None,
            next_run_at=view.next_runs[0] if view.next_runs else None,
            **items,
        )
        return view, stats


def has_automations(spec: ScheduleSpec) -> bool:
    """Whether the spec makes automations of its deployment's own (dependencies, alerts,
    catch-up)."""
    return bool(spec.depends_on or spec.alerts or spec.catchup.policy != "all")


def depends_on_of(deployment: DeploymentResponse) -> list[str]:
    """The schedules a deployment depends on (its spec's `depends_on`)."""
    found = spec_settings_of(deployment.job_variables).get("depends_on")
    return [str(name) for name in found] if isinstance(found, list) else []


def pipeline_of(deployment: DeploymentResponse) -> Pipeline:
    """The pipeline a deployment runs: by its pipeline tag, else by its entrypoint, else
    api_call (a deployment of our flows made outside our API, as prefect.yaml's demo)."""
    for tag in deployment.tags:
        if tag.startswith("pipeline:") and tag.removeprefix("pipeline:") in PIPELINES:
            return PIPELINES[tag.removeprefix("pipeline:")]
    entry = (deployment.entrypoint or "").replace(":", ".")
    return next((p for p in PIPELINES.values() if p.entrypoint == entry), PIPELINES["api_call"])


def deployment_fields(
    spec: ScheduleSpec, pipeline: Pipeline, params: BaseModel, active: bool
) -> dict[str, Any]:
    """The deployment a spec is, as the fields of Prefect's DeploymentCreate."""
    schedule = to_prefect_schedule(spec.timing)
    parameters = params.model_dump(mode="json", exclude_none=True)
    fields: dict[str, Any] = {
        "name": spec.name,
        "description": spec.description
        or default_description(pipeline.name, parameters, spec.timing),
        "entrypoint": pipeline.entrypoint,
        "parameters": parameters,
        "parameter_openapi_schema": pipeline.parameter_schema(),
        "schedules": [
            DeploymentScheduleCreate(
                schedule=schedule, active=active, slug=schedule_slug(spec.timing)
            )
        ]
        if schedule is not None
        else [],
        "tags": sorted(
            {*spec.tags, pipeline.tag, *([SKIP_TAG] if spec.collision == "skip" else [])}
        ),
        "concurrency_limit": spec.concurrency_limit,
        # The pool's queue of that priority (work_pool.PRIORITY_QUEUES).
        "work_queue_name": spec.priority,
        "job_variables": spec_variables(spec),
    }
    if spec.concurrency_limit:
        # skip is Prefect's cancel_new, recorded as Skipped by our worker (warm_worker.py).
        strategy = "cancel_new" if spec.collision == "skip" else spec.collision
        fields["concurrency_options"] = ConcurrencyOptions(
            collision_strategy=ConcurrencyLimitStrategy(strategy.upper())
        )
    return fields


def _parameters(pipeline: Pipeline, parameters: dict[str, Any]) -> BaseModel:
    """The pipeline's parameter model of `parameters`; SpecError names every bad field.

    Parameters larger than Prefect stores (PREFECT_SERVER_API_MAX_PARAMETER_SIZE, 512 KiB by
    default, as JSON) are refused here too: Prefect would refuse them on every retry.
    """
    try:
        model = pipeline.parameters.model_validate(parameters)
    except ValidationError as exc:
        raise SpecError(prefixed(exc.errors(), "parameters")) from None
    limit = get_current_settings().server.api.max_parameter_size
    size = len(json.dumps(model.model_dump(mode="json", exclude_none=True)).encode())
    if limit and size > limit:
        message = f"{size} bytes as JSON; Prefect stores at most {limit}"
        raise SpecError([field_error(("parameters",), message)])
    return model
