"""The test Prefect server (tests/conftest.py's `prefect_api_url`) runs with our fixes."""

from __future__ import annotations

import json
import os
from pathlib import Path
from urllib.parse import urlsplit

import prefect


def test_the_test_prefect_server_runs_with_both_fixes(prefect_api_url: str, tmp_root: Path) -> None:
    # Written by tests/prefect_server_hooks/sitecustomize.py in the server, after the fixes.
    report = json.loads((tmp_root / "server-fixes.json").read_text())
    assert report["prefect_version"] == prefect.__version__
    assert report["zones_cached"] is True and report["cron_cached"] is True
    assert report["cron_dst_debian"] is True
    assert report["triggers_immediate"] is True
    assert report["gc_enabled"] is False and report["gc_thread_alive"] is True
    pid = report["pid"]
    os.kill(pid, 0)  # still running (raises ProcessLookupError otherwise)
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    assert argv[1:3] == ["-m", "uvicorn"]
    assert "prefect.server.api.server:create_app" in argv
    # The very server the tests talk to, not another process that wrote the report.
    assert argv[argv.index("--port") + 1] == str(urlsplit(prefect_api_url).port)
