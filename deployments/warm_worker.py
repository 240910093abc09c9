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
import socket
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
from prefect.client.schemas.objects import FlowRun
from prefect.workers.process import ProcessJobConfiguration, ProcessWorker, ProcessWorkerResult

from deployments.prefect_patches import start_runs_in_zygote
from settings import PROJECT_DIR

WORKER_TYPE = "warm-process"
# The command our runs are configured with: "fork the zygote", not a program to execute.
WARM_ENGINE = "scheduled-pipelines-warm-engine"
# What the zygote imported: a change here means new runs need a new zygote.
WATCHED = ("flows", "blocks", "db", "settings.py")
# What a zygote that died under a running child reports for it (multiprocessing's choice).
LOST_EXIT_CODE = 255


def source_stamp(root: Path = PROJECT_DIR) -> tuple[tuple[str, int], ...]:
    """Modification times of the Python files a zygote imports (cheap: a few dozen stats)."""
    stamps: list[tuple[str, int]] = []
    for name in WATCHED:
        path = root / name
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        stamps += [(str(f), f.stat().st_mtime_ns) for f in files if f.exists()]
    return tuple(stamps)


def zygote_env() -> dict[str, str]:
    """The zygote's environment: the worker's, with glibc's malloc kept to two arenas.

    glibc gives each thread that allocates its own arena (up to 8 per core), and a flow run
    has several threads (its event loop, log and event workers, the control listener): each
    arena's first pages are private memory in every run. Children inherit the zygote's malloc
    settings, read once when it started (`MALLOC_ARENA_MAX`, unless set already).
    """
    return {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2")}


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
    run = await zygote.fork(dict(env or os.environ), str(cwd) if cwd is not None else None)
    if task_status is not None:
        task_status.started(task_status_handler(run) if task_status_handler else run.pid)
    await run.wait()
    return run


class WarmProcessWorker(ProcessWorker):
    """Prefect's process worker whose flow runs are forks of a warm zygote."""

    type = WORKER_TYPE
    _display_name = "Warm process"
    _description = (
        "Execute flow runs as forks of a warm parent that has imported Prefect and the "
        "project's flows: each run is its own process, started in milliseconds."
    )

    async def setup(self) -> None:
        start_runs_in_zygote(WARM_ENGINE, run_in_zygote)
        await super().setup()
        await ZYGOTES.current()  # warm before the first run is due
        assert self._runs_task_group is not None
        self._events_scope = anyio.CancelScope()
        self._runs_task_group.start_soon(self._submit_on_scheduled_events)

    async def teardown(self, *exc_info: Any) -> None:
        # The events listener runs in the runs' task group, which teardown waits for.
        self._events_scope.cancel()
        try:
            await super().teardown(*exc_info)
        finally:
            await ZYGOTES.aclose()

    async def run(
        self,
        flow_run: FlowRun,
        configuration: ProcessJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> ProcessWorkerResult:
        # The run's process is always the warm engine: a template or a run cannot make this
        # worker execute another command.
        configuration.command = WARM_ENGINE
        configuration._command_configured = True
        return await super().run(flow_run, configuration, task_status)

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
