"""Prefect subprocesses (CLI, worker) pointed at the session's test server."""

from __future__ import annotations

import os
import subprocess
import sys


def prefect_env(api_url: str, **extra: str) -> dict[str, str]:
    """The environment of a Prefect CLI or worker subprocess pointed at the test server."""
    return {**os.environ, "PREFECT_API_URL": api_url, **extra}


def prefect_cli(api_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `prefect <args>` against the test server, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=prefect_env(api_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
