"""Two fixes to Prefect 3.8, for its server and for every process of ours that reads schedules.

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
"""

from __future__ import annotations

import functools
import gc
import threading
import time

from prefect import schedules
from prefect._internal.schemas import validators
from prefect.client.schemas import schedules as client_schedules
from prefect.server.schemas import schedules as server_schedules
from prefect.types import _datetime


def install_server_fixes() -> None:
    """Both fixes, for a Prefect server process (ours or the test harness's); call it first."""
    cache_schedule_checks()
    collect_garbage_off_the_loop()


def cache_schedule_checks() -> None:
    """Compute Prefect's list of time zones once, and each cron string's check once (idempotent)."""
    if hasattr(_datetime.get_timezones, "cache_info"):
        return
    zones = functools.cache(_datetime.get_timezones)
    _datetime.get_timezones = zones
    validators.get_timezones = zones
    cron = functools.lru_cache(maxsize=10_000)(validators.validate_cron_string)
    for module in (validators, client_schedules, server_schedules, schedules):
        module.validate_cron_string = cron  # type: ignore[attr-defined]  # each imported it


def collect_garbage_off_the_loop(pause: float = 0.01, full_every: float = 10.0) -> threading.Thread:
    """Run the cyclic garbage collector from a daemon thread instead of whichever thread allocates.

    Every `pause` seconds the thread compares the allocation counts with the collector's
    thresholds and collects the generation CPython itself would, except that a full collection
    runs at most every `full_every` seconds (CPython defers them by how much the old generation
    grew, which it does not expose). Call once per process, early.
    """
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
    collector = threading.Thread(target=collect_forever, name="gc-off-the-loop", daemon=True)
    collector.start()
    return collector
