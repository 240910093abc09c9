"""The Prefect server's SQLite stall in miniature: `python -m tests.utils.gc_deadlock plain|fix`.

Connection A (its own aiosqlite thread) holds SQLite's write lock inside a transaction that the
event loop will commit; connection B waits for that lock (busy timeout 3 s) holding its own
mutex; then a cursor of B, caught in a reference cycle, becomes garbage. `plain`: CPython's
collector runs on the loop thread (as an allocation there would trigger it) and blocks on B's
mutex, so A's commit waits for B's timeout. `fix`: `collect_garbage_off_the_loop()` collects in
its own thread, which alone waits. Prints one JSON line: how long the loop took to reach A's
commit, whether B's insert went through, and which thread freed the cursor.
"""

from __future__ import annotations

import asyncio
import gc
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import aiosqlite

from deployments.prefect_patches import collect_garbage_off_the_loop


class Junk:
    """Holds a cursor in a cycle and records the thread that frees it."""

    freed_in: str | None = None

    def __init__(self, cursor: Any) -> None:
        self.cursor = cursor
        self.me = self

    def __del__(self) -> None:
        Junk.freed_in = threading.current_thread().name


async def main(fix: bool) -> dict[str, Any]:
    if fix:
        collect_garbage_off_the_loop()
    path = Path(tempfile.mkdtemp()) / "lock.db"
    a = await aiosqlite.connect(path, isolation_level=None)
    await a.execute("pragma journal_mode=wal")
    await a.execute("create table t (x)")
    b = await aiosqlite.connect(path, isolation_level=None)
    await b.execute("pragma busy_timeout=3000")
    cursor = await b.execute("select 1 union all select 2")
    await cursor.fetchone()  # its statement stays live, so freeing it resets it
    await a.execute("begin immediate")
    await a.execute("insert into t values (0)")
    waiting = asyncio.ensure_future(b.execute("insert into t values (1)"))
    await asyncio.sleep(0.3)  # B is now waiting for the lock, holding its mutex
    Junk(cursor._cursor)
    del cursor
    began = time.monotonic()
    if fix:
        kept: list[list[int]] = [
            [] for _ in range(5000)
        ]  # enough new objects for a young collection
        await asyncio.sleep(0.2)
        del kept
    else:
        gc.collect()
    await a.execute("commit")
    blocked = time.monotonic() - began
    try:
        await waiting
        inserted = True
    except aiosqlite.OperationalError:
        inserted = False
    for _ in range(100):  # the collector thread frees it once B lets go of its mutex
        if Junk.freed_in:
            break
        await asyncio.sleep(0.05)
    await a.close()
    await b.close()
    return {"blocked": blocked, "inserted": inserted, "freed_in": Junk.freed_in}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1] == "fix"))))
