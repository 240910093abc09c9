"""Our changes to Prefect 3.8: six fixes (its server and every process of ours that reads
schedules or talks to it) and one extension point Prefect lacks (how the warm worker starts a
run).

1. Schedule checks done once per value (`cache_schedule_checks`). Prefect checks the time zone
of every cron schedule it builds, on the server and in the client, against
`zoneinfo.available_timezones()` (`prefect._internal.schemas.validators.default_timezone`), which
walks the time-zone database on disk on every call: about 7 ms per schedule on this machine; and
it parses the cron string again with croniter (`validate_cron_string`, ~0.1 ms). The server
builds a schedule for every deployment it reads (each deployment answer, each run created from a
deployment, every scheduler loop over all deployments) on its event loop, so with a few hundred
jobs the loop walked directories while requests and the SQLite write lock waited behind it
(`benchmarks/register_jobs.py`, 1,000 jobs on PostgreSQL: registering them took 388 s before,
76 s after); a client pays it again for every deployment it parses. The zone list is computed
once per process (it does not change under a running process), and a cron string's verdict once
per string (a pure function of it). Invalid values are still refused, with Prefect's messages.
Neither is cached upstream as of Prefect 3.8.8.

2. Garbage collected off the event loop (the Prefect server on SQLite). Prefect's server talks to
SQLite through aiosqlite, one thread per connection, with a 60 s busy timeout. When a statement
fails (say "database is locked") the exception's frames keep its sqlite3 cursor in a reference
cycle, which only the cyclic garbage collector frees; and CPython runs that collector in
whichever thread happens to allocate, often the event loop's. Freeing the cursor resets its
statement, which takes its connection's mutex; if that connection is waiting for the write lock
at that moment (holding its mutex for up to 60 s), the event loop thread blocks on the mutex,
and the coroutine holding the write lock, which needs the event loop to commit, cannot run: the
whole server stops for 60 s, then the waiter fails with "database is locked" and makes more such
garbage. Seen in `benchmarks/register_jobs.py` (py-spy: the loop thread in `gc_collect_main` ->
`cursor_dealloc` -> `sqlite3_reset` -> `pthread_mutex_lock`; tasks stalled exactly 60.1 s) and
reproduced by tests/utils/gc_deadlock.py. `collect_garbage_off_the_loop()` turns
automatic collection off and runs the same generational collections from a thread of its own, so
a blocked finalizer stalls only that thread until the lock holder, still scheduled, commits.

3. Cron schedules planned by Debian cron's DST rules (`plan_cron_by_debian_rules`). Prefect's
server plans cron runs with croniter, which gets both DST changes wrong (measured on its own
server): `30 2 * * *` in Europe/Paris is planned at 01:30 CET on 2027-03-28, an hour before its
time (02:30 does not exist that day), and `0 * * * *` in Europe/Berlin has no run in the repeated
hour of 2027-10-31. Its CronSchedule's date generator is replaced by one that asks
`deployments.cron.debian_cron_times` (cronsim) and yields the same kind of dates, so the
scheduler loop, `POST /deployments/{id}/schedule` and the UI's upcoming runs follow the rules
our API answers with; expressions those rules do not cover go to Prefect's own maths.

4. Runs started as forks of a warm parent (`start_runs_in_zygote`, the warm worker's process
only). Prefect's process worker starts a run through `EngineCommandStarter`, which builds the
run's environment (flow run id, control channel for cancellation, settings, job variables)
and hands the command to `prefect.runner._starter_engine.run_process`. That name is replaced by
a dispatcher that sends the warm worker's own command to its zygote and every other command to
Prefect's `run_process`, so the rest of Prefect's machinery stays as it is
(deployments/warm_worker.py says why).

5. The CA bundle read once per process (`load_ca_bundle_once`). Every Prefect client Prefect
builds (`get_client()`: a flow run builds several, for its engine, its logs, its events, each
task's state) makes a new verifying TLS context with `ssl.create_default_context(cafile=...)`,
which parses the whole CA bundle (~25 ms of CPU here), whether the API is https or not: py-spy
put 44 % of a warm flow run's busy time before Running there. The `ssl` that Prefect's client
modules see builds a verifying context once per CA file and hands the same one out again (a
context is safe to share between connections and threads; these callers only pass it to httpx
or websockets). Contexts with any other arguments (the insecure one Prefect then changes) are
built new each time, as before. The warm zygote builds the default one before it forks, so its
runs never parse the bundle at all.

6. Only HTTP requests count against the SQLite server's request limit
(`limit_only_http_requests`). On SQLite, Prefect's server wraps its app in
`RequestLimitMiddleware`, an `anyio.CapacityLimiter(100)` around every ASGI call to keep
concurrent writes down; but a websocket is an ASGI call that lasts as long as the connection,
and every running flow holds two (its events going in, its suspension observer's events
coming out), as do workers and our API. With ~45 flow runs at once the 100 slots were all
websockets, every HTTP request (even /api/health) queued behind them, and the flow runs that
held them waited for answers that never came: the server stood idle, deadlocked, until killed
(`benchmarks/scheduling_latency.py`, 100 runs due at once; the stuck tasks dumped: 35 requests
in `acquire_on_behalf_of`, 68 in `stream_events_in` / `stream_workspace_events_out`). Requests
keep the limit of 100; websocket and lifespan scopes pass through it.

7. A flow run's labels written under SQLite's write lock (`write_labels_under_the_write_lock`).
The worker adds its labels to every run it submits (`PATCH /flow_runs/{id}/labels`); Prefect's
server reads the run's labels and then writes the merged ones in one DEFERRED transaction. On
SQLite (WAL) a transaction that has read cannot take the write lock once another connection
has committed since its read: it fails at once with SQLITE_BUSY_SNAPSHOT instead of waiting,
the server answers 503, and the worker's client retries after 2, 4, 8, 16, 32 s. With 100 runs
submitted at once, 7-28 of them started a minute late that way (the worker's stuck tasks
dumped: all in `update_flow_run_labels` -> `_send_with_retry`). The update now begins its
transaction IMMEDIATE, as Prefect does itself for state changes, so it waits its turn for the
lock (SQLite's busy timeout) and then reads the latest labels; PostgreSQL is unaffected.

8. Prefect's settings turned into environment variables once per settings object (the warm
worker's process, `compute_settings_env_once`). For every run it starts, the worker turns its
settings into environment variables twice (`Settings.to_environment_variables`, for the job's
base environment and again in `EngineCommandStarter`): a dump and walk of every settings model,
25-50 ms of CPU each on the worker's event loop, before the run's process can start. The
answer is a function of the settings object, which Prefect never changes in place (new
settings are new objects: `copy_with_update`, a refreshed context), so it is kept for the last
few objects and a copy handed out.

9. Automations evaluated under SQLite's write lock (`evaluate_triggers_under_the_write_lock`).
Prefect's triggers service evaluates each event against each automation in a DEFERRED
transaction that reads the automation's bucket and then writes it: the same SQLITE_BUSY_SNAPSHOT
as in 7, at once, whenever a run's state changed meanwhile. The event is then evaluated again
from the start, so an automation that had fired for it fires twice (a schedule's `depends_on`
trigger ran it twice after one completion) and, after three failures, the others never see it
(another chain did not run at all). Its transactions now begin IMMEDIATE.

Each fix is guarded (`SCHEDULE_CHECKS`, `CA_BUNDLE_ONCE`, ...): before patching anything it
checks that the Prefect release is one the fix was checked against and that everything it
replaces or relies on is still there, and raises `PrefectPatchError` otherwise, so that
upgrading Prefect stops our processes at start-up instead of silently running them unpatched or
mispatched."""

from __future__ import annotations

import contextlib
import datetime
import functools
import gc
import importlib
import inspect
import platform
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

from packaging.specifiers import SpecifierSet
from packaging.version import InvalidVersion, Version

from deployments.cron import debian_cron_times


class PrefectPatchError(RuntimeError):
    """A fix here refused to patch a Prefect (or Python) it was not written for."""


@dataclass(frozen=True)
class Patch:
    """One fix: the Prefect releases it was checked against and the attributes it replaces."""

    name: str
    prefect_versions: SpecifierSet
    # "module:attribute"; entries with the same attribute name are copies of one function (each
    # module imported it), all replaced by one wrapper of the first.
    replaces: tuple[str, ...] = ()
    # Where it runs at all: CPython releases whose collector it reproduces (None: any Python).
    cpython_versions: SpecifierSet | None = None


SCHEDULE_CHECKS = Patch(
    name="cache_schedule_checks",
    prefect_versions=SpecifierSet(">=3.8,<3.9"),
    replaces=(
        "prefect.types._datetime:get_timezones",
        "prefect._internal.schemas.validators:get_timezones",
        "prefect._internal.schemas.validators:validate_cron_string",
        "prefect.client.schemas.schedules:validate_cron_string",
        "prefect.server.schemas.schedules:validate_cron_string",
        "prefect.schedules:validate_cron_string",
    ),
)
CRON_DST = Patch(
    name="plan_cron_by_debian_rules",
    prefect_versions=SpecifierSet(">=3.8,<3.9"),
    # What the replacement relies on to prepare its arguments and build its answers as the
    # original does (the dates' text goes into the scheduler's idempotency keys).
    replaces=(
        "prefect.server.schemas.schedules:CronSchedule._get_dates_generator",
        "prefect.server.schemas.schedules:_prepare_scheduling_start_and_end",
        "prefect.server.schemas.schedules:MAX_ITERATIONS",
        "prefect.server.schemas.schedules:create_datetime_instance",
        "prefect.server.schemas.schedules:now",
    ),
)
RUN_IN_ZYGOTE = Patch(
    name="start_runs_in_zygote",
    prefect_versions=SpecifierSet(">=3.8,<3.9"),
    replaces=(
        "prefect.runner._starter_engine:run_process",
        "prefect.runner._starter_engine:EngineCommandStarter",
        "prefect.workers.process:EngineCommandStarter",
        "prefect.context:refresh_global_settings_context",
        # The warm worker's job configuration relies on it: the engine loads the flow named
        # in FLOW_ENTRYPOINT_ENV when that is set (checked in start_runs_in_zygote).
        "prefect.flow_engine:load_flow",
        # The warm worker writes a run's labels off its start (its own method, overridden).
        "prefect.workers.base:BaseWorker._give_worker_labels_to_flow_run",
        # ... and skips the crash report of a run it handed back to Scheduled on stopping.
        "prefect.workers.base:BaseWorker._propose_crashed_state",
        # ... and records a run a skip collision cancelled as Skipped (deployments/controls.py).
        "prefect.workers.base:BaseWorker._propose_pending_state",
    ),
)
SETTINGS_ENV_ONCE = Patch(
    name="compute_settings_env_once",
    prefect_versions=SpecifierSet(">=3.8,<3.9"),
    replaces=("prefect.settings.models.root:Settings.to_environment_variables",),
)
# The variable Prefect's engine loads a run's flow from, instead of from its deployment.
FLOW_ENTRYPOINT_ENV = "PREFECT__FLOW_ENTRYPOINT"
CA_BUNDLE_ONCE = Patch(
    name="load_ca_bundle_once",
    prefect_versions=SpecifierSet(">=3.8,<3.9"),
    # The modules whose `ssl` builds Prefect's API contexts (its clients, its websockets, the
    # server version check each new process makes); each passes a verifying context straight
    # to httpx / websockets and never changes it.
    replaces=(
        "prefect.client.orchestration:ssl",
        "prefect._internal.websockets:ssl",
        "prefect._internal.version_checking:ssl",
    ),
)
HTTP_ONLY_LIMIT = Patch(
    name="limit_only_http_requests",
    prefect_versions=SpecifierSet(">=3.8,<3.9"),
    # The replacement uses the instance's `app` and `_limiter`, which __init__ sets.
    replaces=(
        "prefect.server.api.server:RequestLimitMiddleware.__call__",
        "prefect.server.api.server:RequestLimitMiddleware.__init__",
    ),
)
LABELS_UNDER_WRITE_LOCK = Patch(
    name="write_labels_under_the_write_lock",
    prefect_versions=SpecifierSet(">=3.8,<3.9"),
    # The contextvar Prefect's SQLite `begin` listener reads to choose BEGIN IMMEDIATE.
    replaces=(
        "prefect.server.models.flow_runs:update_flow_run_labels",
        "prefect.server.database.configurations:SQLITE_BEGIN_MODE",
    ),
)
TRIGGERS_UNDER_WRITE_LOCK = Patch(
    name="evaluate_triggers_under_the_write_lock",
    prefect_versions=SpecifierSet(">=3.8,<3.9"),
    # The triggers service's one way to open a session (it imported it by name).
    replaces=("prefect.server.events.triggers:automations_session",),
)
GC_OFF_THE_LOOP = Patch(
    name="collect_garbage_off_the_loop",
    # The stall is in Prefect 3.8's SQLite server (aiosqlite, its 60 s busy timeout).
    prefect_versions=SpecifierSet(">=3.8,<3.9"),
    # 3.14's incremental collector gives gc.collect(1) and the thresholds other meanings.
    cpython_versions=SpecifierSet(">=3.11,<3.14"),
)

_RECHECK = "re-check the patch against this Prefect and widen its supported versions"
_UPDATE = (
    "re-check the patch against this Prefect and update what it replaces "
    "(or drop the patch if Prefect fixed this upstream)"
)
_collector: threading.Thread | None = None


def _prefect_version() -> str:
    """The installed Prefect's version, read at call time."""
    import prefect

    return str(prefect.__version__)


def _require(patch: Patch) -> list[tuple[Any, str]]:
    """Check that `patch` fits this Prefect and Python; return the (module, attribute)s it replaces.

    Raises PrefectPatchError naming the patch and what does not fit; patches nothing.
    """
    where = "in deployments/prefect_patches.py"
    found = _prefect_version()
    try:
        supported = patch.prefect_versions.contains(Version(found), prereleases=True)
    except InvalidVersion:
        supported = False
    if not supported:
        raise PrefectPatchError(
            f"{patch.name} was written for Prefect {patch.prefect_versions}, "
            f"but Prefect {found} is installed: {_RECHECK} ({patch.name} {where})"
        )
    if patch.cpython_versions is not None:
        implementation, python = platform.python_implementation(), platform.python_version()
        if implementation != "CPython" or not patch.cpython_versions.contains(
            python, prereleases=True
        ):
            raise PrefectPatchError(
                f"{patch.name} reproduces CPython {patch.cpython_versions}'s garbage collector, "
                f"but this is {implementation} {python}: re-check the patch against this "
                f"Python's collector and widen its supported versions ({patch.name} {where})"
            )
        threshold, count = gc.get_threshold(), gc.get_count()
        if len(threshold) != 3 or len(count) != 3:
            raise PrefectPatchError(
                f"{patch.name} expects 3 generations from gc.get_threshold() and gc.get_count(), "
                f"got {threshold} and {count}: re-check the patch against this Python's "
                f"collector ({patch.name} {where})"
            )
    targets: list[tuple[Any, str]] = []  # (module or class, attribute)
    first: dict[str, tuple[str, object]] = {}  # attribute -> the module and value seen first
    for target in patch.replaces:
        module_name, attribute = target.split(":")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PrefectPatchError(
                f"{patch.name} replaces {module_name}.{attribute}, but Prefect {found} has no "
                f"module {module_name}: {_UPDATE} ({patch.name} {where})"
            ) from exc
        owner: object = module
        *path, attribute = attribute.split(".")  # "Class.method": the method of a class
        for name in path:
            owner = getattr(owner, name, None)
        if owner is None or not hasattr(owner, attribute):
            raise PrefectPatchError(
                f"{patch.name} replaces {module_name}.{attribute}, which Prefect {found} does "
                f"not have: {_UPDATE} ({patch.name} {where})"
            )
        value = getattr(owner, attribute)
        origin, expected = first.setdefault(attribute, (module_name, value))
        if value is not expected:
            # One wrapper of the first module's function in its place would change behaviour.
            raise PrefectPatchError(
                f"{patch.name} replaces {module_name}.{attribute} as the same function as "
                f"{origin}.{attribute}, but in Prefect {found} it is another one: {_UPDATE} "
                f"({patch.name} {where})"
            )
        targets.append((owner, attribute))
    return targets


def install_server_fixes() -> None:
    """Every fix, for a Prefect server process (ours or the test harness's); call it first."""
    # Every guard before any patch: a refusal leaves the process entirely unpatched.
    server_only = (
        HTTP_ONLY_LIMIT,
        LABELS_UNDER_WRITE_LOCK,
        TRIGGERS_UNDER_WRITE_LOCK,
        GC_OFF_THE_LOOP,
    )
    for patch in (SCHEDULE_CHECKS, CRON_DST, CA_BUNDLE_ONCE, *server_only):
        _require(patch)
    cache_schedule_checks()
    plan_cron_by_debian_rules()
    load_ca_bundle_once()
    limit_only_http_requests()
    write_labels_under_the_write_lock()
    evaluate_triggers_under_the_write_lock()
    collect_garbage_off_the_loop()


def install_client_fixes() -> None:
    """The fixes for a process that reads and plans schedules but serves no Prefect (our API)."""
    for patch in (SCHEDULE_CHECKS, CRON_DST, CA_BUNDLE_ONCE):
        _require(patch)
    cache_schedule_checks()
    plan_cron_by_debian_rules()
    load_ca_bundle_once()


def start_runs_in_zygote(command: str, run: Callable[..., Awaitable[Any]]) -> None:
    """Send the engine starts whose command is exactly `command` to `run` (idempotent).

    `run` gets `run_process`'s arguments (command, task_status, task_status_handler, env,
    cwd, ...) and must behave as it does: report the process as started, return once it ended.
    """
    targets = dict((attribute, owner) for owner, attribute in _require(RUN_IN_ZYGOTE))
    if FLOW_ENTRYPOINT_ENV not in inspect.getsource(targets["load_flow"].load_flow):
        raise PrefectPatchError(
            f"start_runs_in_zygote relies on prefect.flow_engine.load_flow reading "
            f"{FLOW_ENTRYPOINT_ENV}, which Prefect {_prefect_version()} no longer does: {_UPDATE} "
            "(start_runs_in_zygote in deployments/prefect_patches.py)"
        )
    module = targets["run_process"]
    original = module.run_process
    if getattr(original, "zygote_command", None) == command:
        return  # installed already
    stock = getattr(original, "stock", original)

    async def run_process(*args: Any, **kwargs: Any) -> Any:
        # Prefect calls it as run_process(command=[...], ...); positionally is allowed too.
        argv = kwargs["command"] if "command" in kwargs else args[0]
        if list(argv) == [command]:
            return await run(*args, **kwargs)
        return await stock(*args, **kwargs)

    run_process.zygote_command = command  # type: ignore[attr-defined]
    run_process.stock = stock  # type: ignore[attr-defined]
    module.run_process = run_process


def plan_cron_by_debian_rules() -> None:
    """Make Prefect's server-side CronSchedule plan runs by Debian cron's DST rules (idempotent).

    The replacement prepares `start`, `end` and `n` exactly as Prefect's generator does, asks
    `debian_cron_times`, and yields Prefect's own datetime type in the schedule's zone (whose
    text, "2027-03-29 02:30:00+02:00", is part of the scheduler's idempotency key, so runs a
    server planned before the fix are not planned twice). Expressions the rules do not cover
    (None from debian_cron_times) get Prefect's original generator.
    """
    _require(CRON_DST)
    from prefect.server.schemas import schedules as server_schedules

    cron_schedule = server_schedules.CronSchedule
    original = cron_schedule._get_dates_generator
    if getattr(original, "debian_cron", False):
        return  # installed already

    def dates(
        self: server_schedules.CronSchedule,
        n: int | None = None,
        start: datetime.datetime | None = None,
        end: datetime.datetime | None = None,
    ) -> Iterator[datetime.datetime]:
        first, last = server_schedules._prepare_scheduling_start_and_end(
            start if start is not None else server_schedules.now("UTC"), end, self.timezone or "UTC"
        )
        limit = n if n is not None else server_schedules.MAX_ITERATIONS if end is not None else 1
        times = debian_cron_times(
            self.cron, self.timezone, first, limit=limit, end=last, day_or=self.day_or
        )
        if times is None:
            yield from original(self, n=n, start=start, end=end)
            return
        for when in times:
            yield server_schedules.create_datetime_instance(when)

    dates.debian_cron = True  # type: ignore[attr-defined]
    cron_schedule._get_dates_generator = dates  # type: ignore[method-assign,assignment]


def cache_schedule_checks() -> None:
    """Compute Prefect's list of time zones once, and each cron string's check once (idempotent)."""
    targets = _require(SCHEDULE_CHECKS)
    originals = {attribute: getattr(module, attribute) for module, attribute in targets}
    if hasattr(originals["get_timezones"], "cache_info"):
        return  # installed already
    wrappers = {
        # The zone list does not change under a running process; a cron verdict is pure.
        "get_timezones": functools.cache(originals["get_timezones"]),
        "validate_cron_string": functools.lru_cache(maxsize=10_000)(
            originals["validate_cron_string"]
        ),
    }
    for module, attribute in targets:
        setattr(module, attribute, wrappers[attribute])


def limit_only_http_requests() -> None:
    """Let websocket (and lifespan) scopes past Prefect's SQLite request limit (idempotent)."""
    _require(HTTP_ONLY_LIMIT)
    from prefect.server.api.server import RequestLimitMiddleware

    if getattr(RequestLimitMiddleware.__call__, "http_only", False):
        return  # installed already

    async def call(self: Any, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":  # a stream for as long as it is open: not a request
            await self.app(scope, receive, send)
            return
        async with self._limiter:
            await self.app(scope, receive, send)

    call.http_only = True  # type: ignore[attr-defined]
    RequestLimitMiddleware.__call__ = call  # type: ignore[method-assign]


def write_labels_under_the_write_lock() -> None:
    """Begin the server's flow-run label updates IMMEDIATE on SQLite (idempotent)."""
    _require(LABELS_UNDER_WRITE_LOCK)
    from prefect.server.database import configurations
    from prefect.server.models import flow_runs

    original: Callable[..., Awaitable[Any]] = flow_runs.update_flow_run_labels
    if getattr(original, "immediate", False):
        return  # installed already

    @functools.wraps(original)
    async def update_flow_run_labels(*args: Any, **kwargs: Any) -> Any:
        # The route began its session's transaction DEFERRED, but SQLAlchemy emits BEGIN on
        # the first statement, which runs here: Prefect's listener then begins IMMEDIATE.
        token = configurations.SQLITE_BEGIN_MODE.set("IMMEDIATE")
        try:
            return await original(*args, **kwargs)
        finally:
            configurations.SQLITE_BEGIN_MODE.reset(token)

    update_flow_run_labels.immediate = True  # type: ignore[attr-defined]
    flow_runs.update_flow_run_labels = update_flow_run_labels


def evaluate_triggers_under_the_write_lock() -> None:
    """Begin the triggers service's transactions IMMEDIATE on SQLite (idempotent).

    Prefect evaluates an event against each automation in a DEFERRED transaction that reads
    the automation's bucket, then writes it. On SQLite's WAL, a write after a read fails at
    once ("database is locked", SQLITE_BUSY_SNAPSHOT, which no busy timeout waits out) when
    another writer committed in between; the event is then evaluated again, so automations
    that already fired for it fire twice (a dependent schedule ran twice) and the rest may
    never see it. Begun IMMEDIATE, each evaluation waits for the write lock instead, under the
    busy timeout. PostgreSQL ignores the flag (Prefect locks rows there).
    """
    _require(TRIGGERS_UNDER_WRITE_LOCK)
    from prefect.server.database import provide_database_interface
    from prefect.server.events import triggers

    if getattr(triggers.automations_session, "immediate", False):
        return  # installed already

    @contextlib.asynccontextmanager
    async def automations_session(begin_transaction: bool = False) -> AsyncIterator[Any]:
        db = provide_database_interface()
        async with db.session_context(
            begin_transaction=begin_transaction, with_for_update=begin_transaction
        ) as session:
            yield session

    automations_session.immediate = True  # type: ignore[attr-defined]
    triggers.automations_session = automations_session


class SslBuildingCaContextsOnce:
    """The `ssl` module, except that `create_default_context(cafile=F)` is built once per F."""

    def __init__(self, real: Any):
        self.real = real
        self._contexts: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)

    def create_default_context(
        self,
        purpose: Any = None,
        *,
        cafile: str | None = None,
        capath: str | None = None,
        cadata: Any = None,
    ) -> Any:
        purpose = self.real.Purpose.SERVER_AUTH if purpose is None else purpose
        others = capath is not None or cadata is not None
        if cafile is None or others or purpose != self.real.Purpose.SERVER_AUTH:
            return self.real.create_default_context(
                purpose, cafile=cafile, capath=capath, cadata=cadata
            )
        with self._lock:
            context = self._contexts.get(cafile)
            if context is None:
                context = self._contexts[cafile] = self.real.create_default_context(cafile=cafile)
            return context


def load_ca_bundle_once() -> SslBuildingCaContextsOnce:
    """Give Prefect's client modules an `ssl` that parses each CA file once (idempotent)."""
    targets = _require(CA_BUNDLE_ONCE)
    current = targets[0][0].ssl
    shared = current if isinstance(current, SslBuildingCaContextsOnce) else None
    shared = shared or SslBuildingCaContextsOnce(current)
    for module, attribute in targets:
        setattr(module, attribute, shared)
    return shared


def compute_settings_env_once(kept: int = 4) -> None:
    """Keep `Settings.to_environment_variables` answers per settings object (idempotent).

    The last `kept` (object, arguments) answers are kept, with a reference to their object so
    that its id cannot be reused while its answer is; each caller gets its own copy.
    """
    ((owner, attribute),) = _require(SETTINGS_ENV_ONCE)
    original = getattr(owner, attribute)
    if getattr(original, "computes_once", False):
        return
    answers: dict[tuple[int, tuple[Any, ...]], tuple[object, dict[str, str]]] = {}

    @functools.wraps(original)
    def to_environment_variables(self: Any, *args: Any, **kwargs: Any) -> dict[str, str]:
        key = (id(self), (*args, *sorted(kwargs.items())))
        found = answers.get(key)
        if found is None or found[0] is not self:
            found = answers[key] = (self, original(self, *args, **kwargs))
            while len(answers) > kept:
                answers.pop(next(iter(answers)))
        return dict(found[1])

    to_environment_variables.computes_once = True  # type: ignore[attr-defined]
    setattr(owner, attribute, to_environment_variables)


def collect_garbage_off_the_loop(pause: float = 0.01, full_every: float = 10.0) -> threading.Thread:
    """Run the cyclic garbage collector from a daemon thread instead of whichever thread allocates.

    Every `pause` seconds the thread compares the allocation counts with the collector's
    thresholds and collects the generation CPython itself would, except that a full collection
    runs at most every `full_every` seconds (CPython defers them by how much the old generation
    grew, which it does not expose). Call once per process, early; a later call returns the
    running thread.
    """
    global _collector
    _require(GC_OFF_THE_LOOP)
    if _collector is not None and _collector.is_alive():
        return _collector
    young_limit, middle_limit, old_limit = gc.get_threshold()

    def collect_forever() -> None:
        last_full = time.monotonic()
        while True:
            time.sleep(pause)
            young, middle, old = gc.get_count()
            if old >= old_limit and time.monotonic() - last_full >= full_every:
                gc.collect(2)
                last_full = time.monotonic()
            elif middle >= middle_limit:
                gc.collect(1)
            elif young >= young_limit:
                gc.collect(0)

    gc.disable()
    _collector = threading.Thread(target=collect_forever, name="gc-off-the-loop", daemon=True)
    _collector.start()
    return _collector
