"""Prefect's time-zone list is computed once per process, and still refuses unknown zones."""

from __future__ import annotations

import json
import subprocess
import sys
import zoneinfo

import pytest
from prefect.client.schemas.schedules import CronSchedule as ClientCron
from prefect.server.schemas.schedules import CronSchedule as ServerCron
from pydantic import ValidationError

from deployments.prefect_patches import cache_schedule_checks
from settings import PROJECT_DIR


def test_schedules_list_time_zones_once(monkeypatch: pytest.MonkeyPatch) -> None:
    cache_schedule_checks()
    cache_schedule_checks()  # a second install changes nothing
    ServerCron(cron="0 9 * * 1", timezone="UTC")  # the one walk
    walks = 0
    real = zoneinfo.available_timezones

    def counting() -> set[str]:
        nonlocal walks
        walks += 1
        return real()

    monkeypatch.setattr("prefect.types._datetime.available_timezones", counting)
    for _ in range(50):
        ServerCron(cron="0 9 * * 1", timezone="Europe/Paris")
        ClientCron(cron="0 9 * * 1", timezone="UTC")
    assert walks == 0
    with pytest.raises(ValidationError, match="Invalid timezone"):
        ServerCron(cron="0 9 * * 1", timezone="Mars/Olympus_Mons")
    with pytest.raises(ValidationError, match="Invalid timezone"):
        ClientCron(cron="0 9 * * 1", timezone="Mars/Olympus_Mons")


def test_a_cron_string_is_checked_once(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect._vendor.croniter import croniter

    cache_schedule_checks()
    ServerCron(cron="5 4 * * 2", timezone="UTC")
    checks = 0
    real = croniter.is_valid

    def counting(*args: object, **kwargs: object) -> bool:
        nonlocal checks
        checks += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(croniter, "is_valid", counting)
    for _ in range(20):
        ServerCron(cron="5 4 * * 2", timezone="UTC")
        ClientCron(cron="5 4 * * 2", timezone="UTC")
    assert checks == 0
    for cron in ("61 4 * * 2", "H 4 * * 2"):  # refused every time, with Prefect's message
        for model in (ServerCron, ClientCron, ServerCron):
            with pytest.raises(ValidationError, match=r"cron string|Hashed"):
                model(cron=cron, timezone="UTC")


def run_python(*args: str) -> str:
    """`python <args>` in the project; its standard output."""
    return subprocess.run(
        [sys.executable, *args],
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout


def test_prefect_server_module_is_prefects_cli() -> None:
    out = run_python("-m", "deployments.prefect_server", "version")
    assert "Version:" in out and "3.8." in out


def test_prefect_server_module_installs_both_fixes_before_prefect_runs() -> None:
    # Prefect's CLI replaced by a probe that reports what it finds when it is called.
    probe = (
        "import gc, json, threading, prefect.cli, prefect.types._datetime as d\n"
        "prefect.cli.app = lambda: print(json.dumps({'gc': gc.isenabled(), "
        "'zones': hasattr(d.get_timezones, 'cache_info'), "
        "'threads': [t.name for t in threading.enumerate()]}))\n"
        "from deployments.prefect_server import main\n"
        "main()\n"
    )
    found = json.loads(run_python("-c", probe).splitlines()[-1])
    assert found["gc"] is False and found["zones"] is True
    assert "gc-off-the-loop" in found["threads"]


def run_gc_scene(mode: str) -> dict[str, object]:
    return json.loads(run_python("-m", "tests.utils.gc_deadlock", mode).splitlines()[-1])


def test_garbage_collected_on_the_loop_stalls_it_for_the_busy_timeout() -> None:
    # The failure the fix is for, on this Python and SQLite: the loop waits out B's timeout.
    scene = run_gc_scene("plain")
    assert scene["freed_in"] == "MainThread"
    assert float(str(scene["blocked"])) > 2
    assert scene["inserted"] is False


def test_garbage_collected_off_the_loop_leaves_it_running() -> None:
    scene = run_gc_scene("fix")
    assert scene["freed_in"] == "gc-off-the-loop"
    assert float(str(scene["blocked"])) < 1.5
    assert scene["inserted"] is True
