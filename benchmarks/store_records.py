"""Bulk storage of extracted records into `api_records`: our store task versus raw drivers.

Run: `uv run python -m benchmarks.store_records [--rows N] [--repeat R] [--only sqlite|postgres]`.

Every method writes the same rows (schedule, key, flow_run_id, data, fetched_at) into the same
freshly migrated, emptied `api_records` table of a scratch database, inside one transaction,
and each timing covers turning the extracted records into parameters, including `json.dumps`
of every record (the serialiser SQLAlchemy's JSON type uses), up to the commit:

- ours: `flows.api_call.store_records.fn` — builds the row dicts, drops duplicate keys, then
  `db.crud.upsert_rows` executes the compiled INSERT ... ON CONFLICT DO UPDATE in 5,000-row
  executemany batches, each value converted by its column type (JSON, UUID, UTC timestamp).
- executemany (PostgreSQL): psycopg 3 `cursor.executemany` of the same INSERT ... ON CONFLICT
  (schedule, key) DO UPDATE, which psycopg runs in pipeline mode; the fair baseline.
- copy (PostgreSQL): psycopg 3 `COPY api_records (...) FROM STDIN`, no conflict handling; a
  stricter floor that no upsert can reach.
- executemany (SQLite): stdlib `sqlite3` `executemany` of the same upsert, one transaction,
  with the pragmas our engine sets (WAL, synchronous=NORMAL), the values stored the way
  SQLAlchemy stores them there (UUID as 32 hex digits, naive "YYYY-MM-DD HH:MM:SS.ffffff").

The runs alternate between methods and the table is emptied before each; the table reports
the best (or median) of `--repeat` runs. Nothing is asserted about the times.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

from db.engine import create_db_engine
from db.migrate import upgrade
from db.models import utcnow
from flows.api_call import store_records
from flows.api_call_params import DestinationSpec
from flows.extraction import Extracted
from settings import normalise_database_url
from tests.utils.postgres import scratch_postgres

SCHEDULE = "bench"
COLUMNS = "schedule, key, flow_run_id, data, fetched_at"
UPSERT_TAIL = (
    " ON CONFLICT (schedule, key) DO UPDATE SET flow_run_id = excluded.flow_run_id,"
    " data = excluded.data, fetched_at = excluded.fetched_at"
)
PG_UPSERT = f"INSERT INTO api_records ({COLUMNS}) VALUES (%s, %s, %s, %s::jsonb, %s)" + UPSERT_TAIL
SQLITE_UPSERT = f"INSERT INTO api_records ({COLUMNS}) VALUES (?, ?, ?, ?, ?)" + UPSERT_TAIL
PG_COPY = f"COPY api_records ({COLUMNS}) FROM STDIN"
DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/test"

Records = list[tuple[str | None, dict[str, Any]]]
Method = Callable[[], None]


@dataclass
class Result:
    """The times of one method on one backend, in seconds."""

    backend: str
    method: str
    times: list[float]
    gc_times: list[float]

    def value(self, stat: str) -> float:
        """The best or the median time."""
        return min(self.times) if stat == "best" else statistics.median(self.times)


def make_records(rows: int, seed: int = 42) -> Records:
    """Records shaped like what api_call extracts from a price API: key and a small object."""
    rng = random.Random(seed)
    return [
        (
            f"sym-{i}",
            {
                "symbol": f"SYM{i}",
                "usd": round(rng.uniform(0.0001, 70_000.0), 6),
                "name": f"Coin number {i}",
                "rank": i + 1,
                "change_24h": round(rng.uniform(-25.0, 25.0), 4),
            },
        )
        for i in range(rows)
    ]


class GcClock:
    """Seconds the cyclic garbage collector runs, summed from its start/stop callbacks."""

    def __init__(self) -> None:
        self.total = 0.0
        self._start = 0.0

    def __call__(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self._start = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._start


def timed(fn: Method) -> tuple[float, float]:
    """Seconds `fn` takes and, of those, seconds spent in garbage collection."""
    gc.collect()
    clock = GcClock()
    gc.callbacks.append(clock)
    try:
        start = time.perf_counter()
        fn()
        return time.perf_counter() - start, clock.total
    finally:
        gc.callbacks.remove(clock)


def run_rounds(
    backend: str,
    methods: dict[str, Method],
    empty: Callable[[], None],
    count: Callable[[], int],
    rows: int,
    repeat: int,
) -> list[Result]:
    """Time each method `repeat` times, rotating their order, on an emptied table each time."""
    names = list(methods)
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    for round_no in range(repeat):
        shift = round_no % len(names)
        for name in names[shift:] + names[:shift]:
            empty()
            times[name].append(timed(methods[name]))
            stored = count()
            if stored != rows:
                raise RuntimeError(f"{backend}/{name} stored {stored} rows, expected {rows}")
    return [
        Result(backend, name, [t for t, _ in times[name]], [g for _, g in times[name]])
        for name in names
    ]


def ours(engine: sa.Engine, records: Records, run_id: uuid.UUID) -> Method:
    """Our store task, as the api_call flow runs it."""
    extracted = Extracted(records=records, failures=[])
    destination = DestinationSpec()

    def run() -> None:
        store_records.fn(engine, extracted, destination, SCHEDULE, run_id)

    return run


def bench_sqlite(records: Records, repeat: int) -> list[Result]:
    """Ours versus sqlite3 executemany, in a temporary SQLite file."""
    with tempfile.TemporaryDirectory(prefix="sp-bench-") as tmp:
        path = Path(tmp) / "bench.db"
        url = f"sqlite:///{path}"
        upgrade(url)
        engine = create_db_engine(url)
        raw = sqlite3.connect(path, isolation_level=None, timeout=30)
        raw.execute("PRAGMA journal_mode=WAL")
        raw.execute("PRAGMA synchronous=NORMAL")
        run_id = uuid.uuid4()

        def baseline() -> None:
            run_hex = run_id.hex
            fetched_at = utcnow().strftime("%Y-%m-%d %H:%M:%S.%f")
            params = [
                (SCHEDULE, key, run_hex, json.dumps(data), fetched_at) for key, data in records
            ]
            raw.execute("BEGIN")
            raw.executemany(SQLITE_UPSERT, params)
            raw.execute("COMMIT")

        def empty() -> None:
            raw.execute("DELETE FROM api_records")
            raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")

        def count() -> int:
            return int(raw.execute("SELECT count(*) FROM api_records").fetchone()[0])

        try:
            methods = {"ours": ours(engine, records, run_id), "executemany": baseline}
            return run_rounds("sqlite", methods, empty, count, len(records), repeat)
        finally:
            raw.close()
            engine.dispose()


def bench_postgres(records: Records, repeat: int, admin_url: str) -> list[Result]:
    """Ours versus psycopg 3 executemany (pipeline mode) and COPY, in a scratch database."""
    with scratch_postgres(admin_url, prefix="sp_bench_") as url:
        engine = create_db_engine(url)
        libpq_url = sa.make_url(url).set(drivername="postgresql")
        raw = psycopg.connect(libpq_url.render_as_string(hide_password=False))
        run_id = uuid.uuid4()

        def executemany() -> None:
            fetched_at: datetime = utcnow()
            params = [
                (SCHEDULE, key, run_id, json.dumps(data), fetched_at) for key, data in records
            ]
            with raw.cursor() as cur:
                cur.executemany(PG_UPSERT, params)
            raw.commit()

        def copy() -> None:
            fetched_at: datetime = utcnow()
            with raw.cursor() as cur, cur.copy(PG_COPY) as out:
                for key, data in records:
                    out.write_row((SCHEDULE, key, run_id, json.dumps(data), fetched_at))
            raw.commit()

        def empty() -> None:
            raw.execute("TRUNCATE api_records RESTART IDENTITY")
            raw.commit()

        def count() -> int:
            row = raw.execute("SELECT count(*) FROM api_records").fetchone()
            raw.commit()
            return int(row[0]) if row else 0

        try:
            methods = {
                "ours": ours(engine, records, run_id),
                "executemany": executemany,
                "copy": copy,
            }
            return run_rounds("postgres", methods, empty, count, len(records), repeat)
        finally:
            raw.close()
            engine.dispose()


def report(results: list[Result], rows: int, stat: str) -> None:
    """Print ours against each baseline of each backend."""
    header = (
        f"{'backend':<10} {'baseline':<12} {'ours (s)':>9} {'baseline (s)':>13} "
        f"{'ratio':>6} {'ours rows/s':>12} {'base rows/s':>12}"
    )
    print(f"{rows:,} rows, {stat} of {len(results[0].times)} runs each")
    print(header)
    print("-" * len(header))
    for backend in dict.fromkeys(r.backend for r in results):
        mine = next(r for r in results if r.backend == backend and r.method == "ours")
        for base in (r for r in results if r.backend == backend and r.method != "ours"):
            t_ours, t_base = mine.value(stat), base.value(stat)
            print(
                f"{backend:<10} {base.method:<12} {t_ours:>9.3f} {t_base:>13.3f} "
                f"{t_ours / t_base:>5.2f}x {rows / t_ours:>12,.0f} {rows / t_base:>12,.0f}"
            )
    print("\nall runs, seconds (of which in garbage collection):")
    for r in results:
        runs = " ".join(f"{t:.3f} ({g:.3f})" for t, g in zip(r.times, r.gc_times, strict=True))
        print(f"  {r.backend:<10} {r.method:<12} {runs}")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the selected backends and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--postgres-url", default=os.environ.get("TEST_POSTGRES_URL", DEFAULT_PG))
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--stat", choices=("best", "median"), default="best")
    parser.add_argument("--only", choices=("sqlite", "postgres"))
    args = parser.parse_args(argv)
    if args.rows < 1 or args.repeat < 1:
        parser.error("--rows and --repeat must be positive")

    records = make_records(args.rows)
    results: list[Result] = []
    if args.only in (None, "sqlite"):
        results += bench_sqlite(records, args.repeat)
    if args.only in (None, "postgres"):
        results += bench_postgres(records, args.repeat, normalise_database_url(args.postgres_url))
    report(results, args.rows, args.stat)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
