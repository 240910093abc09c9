"""The warm worker: Prefect's process worker, with each flow run a fork of a warm parent.

Prefect's process worker starts every flow run as `python -m prefect.engine`, a new
interpreter that imports Prefect and the flow (~2 s of CPU here) before the run can go
Running: a burst of 100 jobs due at once started minutes late through a pool of 4 on 2 cores.
This worker keeps a zygote (deployments/zygote.py) that has imported Prefect and every module
under `flows/` once, and starts each run as a fork of it: a new OS process ready in
milliseconds, sharing the zygote's memory pages. Everything else is Prefect's own machinery,
unchanged: the worker is a `ProcessWorker` subclass (type `warm-process`, registered through
the `prefect.collections` entry point), so Pending / Running / Completed / Failed states, logs,
Crashed when the process dies, cancellation, work-pool and work-queue limits, flow retries and
deployment parameters behave as with the stock worker. Prefect lacks a warm start of its own:
this is our code only where it must be (how the process is started).

Two more things the stock worker does not do:
- Code under `flows/`, `blocks/`, `db/` or `settings.py` that changed since the zygote started
  is picked up: the next run starts a new zygote (runs of the old one finish there first).
- New runs are picked up as soon as Prefect says they exist (its events stream, a
  `prefect.flow-run.Scheduled` event for this pool), not only at the next poll; polling every
  PREFECT_WORKER_QUERY_SECONDS stays as the fallback.

Pick the stock worker instead with WORKER_TYPE=process (settings.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import socket
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, State
from prefect.concurrency.asyncio import concurrency, rate_limit
from prefect.settings import get_current_settings
from prefect.states import Cancelled, Scheduled
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult
from pydantic import Field, ValidationError

from deployments.catchup import decide_for_run
from deployments.controls import (
    SKIP_TAG,
    RunControls,
)
from deployments.job_template import LOCKED, default_job_env, locked_job_template
from deployments.prefect_api import reschedule_at_its_time
from deployments.prefect_patches import (
    FLOW_ENTRYPOINT_ENV,
    compute_settings_env_once,
    start_runs_in_zygote,
)
from settings import PROJECT_DIR

WORKER_TYPE = "warm-process"
# The command our runs are configured with: "fork the zygote", not a program to execute.
WARM_ENGINE = "scheduled-pipelines-warm-engine"
# What the zygote imported: a change here means new runs need a new zygote.
WATCHED = ("flows", "blocks", "db", "settings.py")
# What a zygote that died under a running child reports for it (multiprocessing's choice).
LOST_EXIT_CODE = 255
# The one pull step a run of the zygote's code may have: start in the project folder.
SET_WORKING_DIRECTORY = "prefect.deployments.steps.set_working_directory"


def zygote_entrypoint(
    entrypoint: str | None, pull_steps: Sequence[dict[str, Any]] | None, root: Path = PROJECT_DIR
) -> str | None:
    """The module entrypoint of a deployment whose flow the zygote has imported, else None.

    A run normally loads its flow by reading its deployment again and running its pull steps
    (~60 ms before Running, in every run). A deployment of a flow under `flows/` of this
    project, with no pull steps or only "start in the project folder", needs neither: the
    zygote imported that module, and the worker starts the run in that folder. Its
    entrypoint, as `flows.module:flow` (from `flows.module.flow`, `flows.module:flow` or the
    file path `flows/module.py:flow` relative to the project), goes to the run in Prefect's
    PREFECT__FLOW_ENTRYPOINT, which its engine loads instead. Any other deployment (code
    from storage, other pull steps, a file outside `flows/`) loads as Prefect loads it.
    """
    if not entrypoint:
        return None
    for step in pull_steps or ():
        (name, arguments), *others = step.items()
        directory = (arguments or {}).get("directory") if name == SET_WORKING_DIRECTORY else None
        if others or not isinstance(directory, str) or "{{" in directory:
            return None
        if Path(directory).resolve() != root.resolve():
            return None
    if ".py:" in entrypoint:
        path, _, name = entrypoint.rpartition(":")
        file = (root / path).resolve()
        if file.parent != (root / "flows").resolve() or not name.isidentifier():
            return None
        module = f"flows.{file.stem}"
    else:
        module, _, name = (
            entrypoint.rpartition(":") if ":" in entrypoint else entrypoint.rpartition(".")
        )
    if not module.startswith("flows.") or not all(p.isidentifier() for p in module.split(".")):
        return None
    return f"{module}:{name}" if name.isidentifier() else None


class WarmProcessJobConfiguration(ProcessJobConfiguration):
    """A process job that always runs the warm engine, in the folder its flow needs.

    Prefect's process job runs the template's `command`; ours is always the warm engine (a
    fork of the zygote), whatever a template, deployment or run says, and its environment and
    folder are never a deployment's or a run's choice. When the zygote has the
    flow's code, its entrypoint is handed over (`zygote_entrypoint`), so the run does not
    read its deployment again nor run its pull steps. `controls` are the schedule's windows,
    catch-up, jitter and limits, which the worker applies before it starts the run.
    """

    controls: dict[str, Any] = Field(default_factory=dict)

    @classmethod
    async def from_template_and_values(
        cls, base_job_template: dict[str, Any], values: dict[str, Any], client: Any = None
    ) -> Any:
        """Prefect's job from a template and variables, without the variables that would
        choose what is executed (`command`, `env`, `working_dir`, `env.X`): Prefect merges a
        variable `env` into the job's environment even when the template does not use it,
        and its server lets a deployment PATCH store any variable (deployments/job_template.py).
        """
        allowed = {k: v for k, v in values.items() if k.split(".")[0] not in LOCKED}
        return await super().from_template_and_values(base_job_template, allowed, client=client)

    def prepare_for_flow_run(
        self, flow_run: FlowRun, deployment: Any = None, *args: Any, **kwargs: Any
    ) -> None:
        super().prepare_for_flow_run(flow_run, deployment, *args, **kwargs)
        self.command = WARM_ENGINE
        self._command_configured = True
        entrypoint = deployment and zygote_entrypoint(deployment.entrypoint, deployment.pull_steps)
        if entrypoint:
            self.env[FLOW_ENTRYPOINT_ENV] = entrypoint
            if deployment.pull_steps:  # the step it would have run: start in the project
                self.working_dir = PROJECT_DIR


def source_stamp(root: Path = PROJECT_DIR) -> tuple[tuple[str, int], ...]:
    """Modification times of the Python files a zygote imports (cheap: a few dozen stats)."""
    stamps: list[tuple[str, int]] = []
    for name in WATCHED:
        path = root / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        stamps += [(str(f), f.stat().st_mtime_ns) for f in files if f.exists()]
    return tuple(stamps)


def zygote_env() -> dict[str, str]:
    """The zygote's environment: the worker's, with its Prefect settings as its runs get them
    and glibc's malloc kept to two arenas.

    Prefect's process worker gives each run its own settings as environment variables
    (`Settings.to_environment_variables`: `False` where the worker's environment may say
    `false`, settings it was given by its profile). The zygote gets the same, so a run whose
    job adds no setting of its own has exactly the zygote's settings and need not compute
    them again (zygote.run_engine). So do the retry settings our job template gives a run
    by default.

    glibc gives each thread that allocates its own arena (up to 8 per core), and a flow run
    has several threads (its event loop, log and event workers, the control listener): each
    arena's first pages are private memory in every run. Children inherit the zygote's malloc
    settings, read once when it started (`MALLOC_ARENA_MAX`, unless set already).
    """
    settings = get_current_settings().to_environment_variables(exclude_unset=True)
    return {
        **os.environ,
        **default_job_env(),  # what the pool's template gives a run that sets no variable
        **settings,
        "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),
    }


class ForkedRun:
    """A flow run process forked by a zygote, as Prefect's ProcessHandle expects one."""

    def __init__(self, pid: int, exited: asyncio.Future[int]):
        self.pid = pid
        self._exited = exited

    @property
    def returncode(self) -> int | None:
        return self._exited.result() if self._exited.done() else None

    async def wait(self) -> int:
        return await asyncio.shield(self._exited)


class ZygoteProcess:
    """One zygote and the connection to it: fork requests out, pids and exit codes back."""

    def __init__(self, process: asyncio.subprocess.Process, stamp: tuple[tuple[str, int], ...]):
        self.process = process
        self.stamp = stamp
        self.retired = False
        self._reader: asyncio.StreamReader
        self._writer: asyncio.StreamWriter
        self._ids = itertools.count(1)
        self._forks: dict[int, asyncio.Future[int]] = {}
        self._exits: dict[int, asyncio.Future[int]] = {}
        self._listening: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, stamp: tuple[tuple[str, int], ...] | None = None) -> ZygoteProcess:
        """Start a zygote and wait until it has imported everything (a few seconds); `stamp`
        is the state of the source it imports (default: `source_stamp()` now)."""
        ours, theirs = socket.socketpair()
        with theirs:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "deployments.zygote",
                str(theirs.fileno()),
                pass_fds=[theirs.fileno()],
                stdin=asyncio.subprocess.DEVNULL,
                cwd=PROJECT_DIR,
                env=zygote_env(),
            )
        zygote = cls(process, stamp if stamp is not None else source_stamp())
        zygote._reader, zygote._writer = await asyncio.open_unix_connection(sock=ours)
        ready = await zygote._reader.readline()
        if not ready:
            raise RuntimeError(f"the zygote exited while importing (code {await process.wait()})")
        zygote._listening = asyncio.create_task(zygote._listen())
        return zygote

    @property
    def busy(self) -> bool:
        return bool(self._exits or self._forks)

    async def fork(self, env: dict[str, str], cwd: str | None) -> ForkedRun:
        """A new flow run process: a fork of the zygote with this environment and folder."""
        run = next(self._ids)
        forked = asyncio.get_running_loop().create_future()
        self._forks[run] = forked
        self._writer.write(json.dumps({"run": run, "env": env, "cwd": cwd}).encode() + b"\n")
        await self._writer.drain()
        pid = await forked
        return ForkedRun(pid, self._exits[pid])

    async def _listen(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while line := await self._reader.readline():
                message = json.loads(line)
                if "pid" in message:
                    # Registered before the exit can be read: messages come in order.
                    self._exits[message["pid"]] = loop.create_future()
                    self._forks.pop(message["run"]).set_result(message["pid"])
                elif "exit" in message:
                    self._exits.pop(message["exit"]).set_result(message["code"])
                    if self.retired and not self.busy:
                        self.close()  # retired, and its last child has ended
        finally:
            lost = RuntimeError("the zygote exited before answering")
            for fork in self._forks.values():
                fork.set_exception(lost)
            for exit_code in self._exits.values():
                exit_code.set_result(LOST_EXIT_CODE)
            self._forks.clear()
            self._exits.clear()

    def retire(self) -> None:
        """Take no more runs; let the zygote go once its running children have ended."""
        self.retired = True
        if not self.busy:
            self.close()

    def close(self) -> None:
        """Let the zygote go now (its running children, if any, are reported lost)."""
        self.retired = True
        if not self._writer.is_closing():
            self._writer.close()

    async def aclose(self) -> None:
        self.close()
        if self._listening is not None:
            await self._listening
        await self.process.wait()


class Zygotes:
    """The current zygote, replaced when watched code changes (old ones drain, then go)."""

    def __init__(self, stamp: Callable[[], tuple[tuple[str, int], ...]] = source_stamp):
        self._stamp = stamp
        self._current: ZygoteProcess | None = None
        self._retired: set[ZygoteProcess] = set()
        self._lock = asyncio.Lock()

    async def current(self) -> ZygoteProcess:
        async with self._lock:
            stamp, zygote = self._stamp(), self._current
            # Zygotes retired earlier that have exited since are forgotten.
            self._retired = {z for z in self._retired if z.process.returncode is None}
            if zygote is not None and zygote.process.returncode is None:
                if zygote.stamp == stamp:
                    return zygote
                zygote.retire()  # code changed: new runs go to a new zygote
                self._retired.add(zygote)
            self._current = await ZygoteProcess.start(stamp)
            return self._current

    async def aclose(self) -> None:
        zygotes = [z for z in (self._current, *self._retired) if z is not None]
        self._current, self._retired = None, set()
        for zygote in zygotes:
            await zygote.aclose()


ZYGOTES = Zygotes()


async def run_in_zygote(
    command: list[str],
    *,
    task_status: anyio.abc.TaskStatus[Any] | None = None,
    task_status_handler: Callable[[Any], Any] | None = None,
    env: dict[str, str] | None = None,
    cwd: Path | str | None = None,
    **_: Any,
) -> ForkedRun:
    """Prefect's `run_process`, for the warm engine command: fork, report it started, wait.

    Called by Prefect's EngineCommandStarter with the environment it built for the run
    (flow run id, control channel, settings, job variables) and the run's folder.
    """
    zygote = await ZYGOTES.current()
    environment = dict(env or os.environ)
    run = await zygote.fork(environment, str(cwd) if cwd is not None else None)
    flow_run_id = environment.get(FLOW_RUN_ID_ENV)
    if flow_run_id:
        LIVE_RUNS[flow_run_id] = run
    try:
        if task_status is not None:
            task_status.started(task_status_handler(run) if task_status_handler else run.pid)
        await run.wait()
    finally:
        if flow_run_id:
            LIVE_RUNS.pop(flow_run_id, None)
    return run


# The run processes of this worker process that have not exited, by flow run id.
LIVE_RUNS: dict[str, ForkedRun] = {}
FLOW_RUN_ID_ENV = "PREFECT__FLOW_RUN_ID"
HANDED_BACK = "Handed back: its worker stopped before the run started"
# What Prefect's server says when it cancels a run under its cancel_new collision strategy.
CONCURRENCY_CANCELLED = "Deployment concurrency limit reached."


class WarmProcessWorker(ProcessWorker):
    """Prefect's process worker whose flow runs are forks of a warm zygote."""

    type = WORKER_TYPE
    job_configuration = WarmProcessJobConfiguration
    _display_name = "Warm process"
    _description = (
        "Execute flow runs as forks of a warm parent that has imported Prefect and the "
        "project's flows: each run is its own process, started in milliseconds."
    )

    @classmethod
    def get_default_base_job_template(cls) -> dict[str, Any]:
        """The locked template (deployments/job_template.py) with the warm engine's command,
        for `prefect work-pool create --type warm-process` as for our own pools."""
        return locked_job_template(WARM_ENGINE, gated=True)

    async def setup(self) -> None:
        self._label_writes: set[asyncio.Task[None]] = set()
        start_runs_in_zygote(WARM_ENGINE, run_in_zygote)
        compute_settings_env_once()
        await super().setup()
        await ZYGOTES.current()  # warm before the first run is due
        assert self._runs_task_group is not None
        self._events_scope = anyio.CancelScope()
        self._runs_task_group.start_soon(self._submit_on_scheduled_events)

    async def _give_worker_labels_to_flow_run(self, flow_run_id: Any) -> None:
        """Prefect's label write, off the run's start: the run starts while it is written.

        The labels (worker and pool names) say who ran it; nothing in the run waits on them.
        A failed write is logged instead of failing the submission.
        """
        parent = super()._give_worker_labels_to_flow_run

        async def write() -> None:
            try:
                await parent(flow_run_id)
            except Exception:
                self._logger.warning("Could not label flow run %s", flow_run_id, exc_info=True)

        task = asyncio.create_task(write())
        self._label_writes.add(task)
        task.add_done_callback(self._label_writes.discard)

    async def teardown(self, *exc_info: Any) -> None:
        # The events listener runs in the runs' task group, which teardown waits for.
        self._events_scope.cancel()
        await asyncio.gather(*self._label_writes, return_exceptions=True)
        with contextlib.suppress(Exception):  # a failed hand-back leaves Prefect's behaviour
            await self._hand_back_unstarted_runs()
        try:
            await super().teardown(*exc_info)
        finally:
            await ZYGOTES.aclose()

    async def _hand_back_unstarted_runs(self) -> None:
        """Runs this worker claimed whose processes still wait for their time go back to
        Scheduled at that time, for the next worker to take.

        The worker claims runs up to WORKER_PREFETCH_SECONDS ahead; their processes are
        Pending until Prefect lets them go Running at their time. Stopped now, they would
        stay Pending for ever (no worker takes a Pending run, and a run sends heartbeats only
        once it runs). Each such process is killed first, so it cannot start meanwhile; a run
        that went Running in that moment is left to Prefect's crash handling.
        """
        self._handed_back: set[str] = set()
        waiting = []
        for flow_run_id, forked in list(LIVE_RUNS.items()):
            flow_run = await self.client.read_flow_run(uuid.UUID(flow_run_id))
            if flow_run.state is not None and flow_run.state.is_pending():
                waiting.append((flow_run_id, forked))
        for _, forked in waiting:
            with contextlib.suppress(ProcessLookupError):
                os.kill(forked.pid, signal.SIGKILL)
        for flow_run_id, forked in waiting:
            await forked.wait()
            flow_run = await self.client.read_flow_run(uuid.UUID(flow_run_id))
            if flow_run.state is None or not flow_run.state.is_pending():
                continue
            self._handed_back.add(flow_run_id)
            await reschedule_at_its_time(self.client, flow_run, HANDED_BACK)
            self._logger.info("Flow run %s handed back to Scheduled", flow_run_id)

    async def _propose_crashed_state(
        self, flow_run: FlowRun, message: str, client: PrefectClient | None = None
    ) -> None:
        """Prefect's crash report, but for a run handed back (its process was stopped on
        purpose, and the run is Scheduled again)."""
        if str(flow_run.id) in getattr(self, "_handed_back", ()):
            return
        await super()._propose_crashed_state(flow_run, message, client)

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        """Prefect's run, once the schedule's controls let it start now; otherwise the run
        moves to its time (Scheduled) or ends Cancelled with the reason, and no process
        starts (deployments/controls.py). A run that starts holds a slot of each of its
        global limits until its process ends, and takes one of its rate limit first."""
        controls = self._controls(flow_run, configuration)
        decision = await decide_for_run(self.client, flow_run, controls)
        if decision.action == "run":
            async with self._limits_held(flow_run, controls):
                return await super().run(flow_run, configuration, task_status)
        state: State[Any] = (
            Scheduled(scheduled_time=decision.at, message=decision.reason)
            if decision.action == "defer"
            else Cancelled(name=decision.name, message=decision.reason)
        )
        await self.client.set_flow_run_state(flow_run.id, state, force=True)
        self.get_flow_run_logger(flow_run).info("Not started now. %s", decision.reason)
        if task_status is not None:
            task_status.started(0)  # no process: nothing to record as its pid
        return ProcessWorkerResult(identifier=f"not-started:{flow_run.id}", status_code=0)

    def _controls(self, flow_run: FlowRun, configuration: Any) -> RunControls:
        try:
            return RunControls.model_validate(getattr(configuration, "controls", {}))
        except ValidationError as exc:
            self._logger.warning(
                "Flow run %s: unreadable controls, none applied: %s", flow_run.id, exc
            )
            return RunControls()

    @contextlib.asynccontextmanager
    async def _limits_held(self, flow_run: FlowRun, controls: RunControls) -> AsyncIterator[None]:
        """Prefect's global concurrency and rate limits around the run's whole process."""
        if controls.rate_limit is not None:
            await rate_limit(controls.rate_limit.name, strict=False)
        if not controls.limits:
            yield
            return
        names = [limit.name for limit in controls.limits]
        self.get_flow_run_logger(flow_run).info("Taking a slot of the limits %s", names)
        async with concurrency(names, occupy=1, strict=False):
            yield

    async def _propose_pending_state(self, flow_run: FlowRun) -> bool:
        """Prefect's claim of a run; a run its deployment's concurrency cancelled under the
        `skip` collision is recorded as Skipped (Temporal's overlap policy), not Cancelled."""
        claimed = await super()._propose_pending_state(flow_run)
        if not claimed and SKIP_TAG in (flow_run.tags or []):
            with contextlib.suppress(Exception):  # the run stays Cancelled, as Prefect set it
                current = await self.client.read_flow_run(flow_run.id)
                state = current.state
                if (
                    state
                    and state.is_cancelled()
                    and CONCURRENCY_CANCELLED in (state.message or "")
                ):
                    message = "Skipped: its previous run was still running (collision: skip)"
                    await self.client.set_flow_run_state(
                        flow_run.id, Cancelled(name="Skipped", message=message), force=True
                    )
        return claimed

    async def _submit_on_scheduled_events(self) -> None:
        """Poll at once when Prefect says a run was scheduled in this pool (else: the loop)."""
        from prefect.events.filters import EventFilter, EventNameFilter

        event_filter = EventFilter(event=EventNameFilter(name=["prefect.flow-run.Scheduled"]))
        wake = asyncio.Event()

        async def submit_when_woken() -> None:
            while True:
                await wake.wait()
                wake.clear()
                with contextlib.suppress(Exception):  # the polling loop reports its failures
                    await self.get_and_submit_flow_runs()

        submitter = asyncio.create_task(submit_when_woken())
        try:
            with self._events_scope:
                await self._listen_for_scheduled_runs(event_filter, wake)
        finally:
            submitter.cancel()

    async def _listen_for_scheduled_runs(self, event_filter: Any, wake: asyncio.Event) -> None:
        """Wake the submitter for each Scheduled event of this pool; reconnect when lost."""
        from prefect.events.clients import get_events_subscriber

        while True:
            try:
                async with get_events_subscriber(filter=event_filter) as subscriber:
                    async for event in subscriber:
                        if self._in_this_pool(event.related):
                            wake.set()
            except Exception as exc:  # a lost stream: polling goes on meanwhile
                self._logger.debug("Events stream lost (%s); reconnecting", exc)
                await asyncio.sleep(5)

    def _in_this_pool(self, related: Sequence[Any]) -> bool:
        pool_id = f"prefect.work-pool.{self.work_pool.id}" if self._work_pool else None
        return any(resource.id == pool_id for resource in related)
