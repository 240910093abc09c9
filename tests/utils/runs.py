"""Waiting on flow runs through our API."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

FINAL_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})


def wait_for_run(api: TestClient, run_id: str, timeout: float = 120) -> dict[str, Any]:
    """Poll /api/runs/{id} until the run reaches a final state."""
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    while time.monotonic() < deadline:
        run = api.get(f"/api/runs/{run_id}").json()
        if run.get("state_type") in FINAL_STATES:
            return run
        time.sleep(0.5)
    raise AssertionError(f"run {run_id} did not finish in {timeout}s: {run}")
