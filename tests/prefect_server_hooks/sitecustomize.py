"""Python imports this at start-up in the test Prefect server's process only.

`prefect_test_harness` starts its server as `python -m uvicorn ... prefect.server.api.server:
create_app`, with no way to run our code first; tests/conftest.py puts this directory on that
process's PYTHONPATH, so the server under test gets the fixes `make run`'s server gets from
`python -m deployments.prefect_server` (see deployments/prefect_patches.py). With
SP_SERVER_FIXES_REPORT set, the server also writes what it runs with to that path, as JSON, for
tests/deployments/test_harness_fixes.py.
"""

from __future__ import annotations

import os
import sys
import traceback


def report_fixes(path: str) -> None:
    """Write this process's pid, command line, Prefect version and state of the fixes to `path`."""
    import gc
    import json
    import threading

    import prefect
    from prefect._internal.schemas import validators
    from prefect.server.events import triggers
    from prefect.server.schemas import schedules
    from prefect.types import _datetime

    report = {
        "pid": os.getpid(),
        "argv": sys.orig_argv,
        "prefect_version": prefect.__version__,
        "gc_enabled": gc.isenabled(),
        "gc_thread_alive": any(
            t.name == "gc-off-the-loop" and t.is_alive() for t in threading.enumerate()
        ),
        "zones_cached": hasattr(_datetime.get_timezones, "cache_info"),
        "cron_cached": hasattr(validators.validate_cron_string, "cache_info"),
        "triggers_immediate": getattr(triggers.automations_session, "immediate", False),
        "cron_dst_debian": getattr(
            schedules.CronSchedule._get_dates_generator, "debian_cron", False
        ),
    }
    partial = f"{path}.{os.getpid()}"
    with open(partial, "w") as out:
        json.dump(report, out)
    os.replace(partial, path)  # whole or absent, if the harness restarts the server


def is_prefect_test_server() -> bool:
    """Whether this process is `prefect_test_harness`'s uvicorn running Prefect's server."""
    return "uvicorn" in sys.orig_argv and "prefect.server.api.server:create_app" in sys.orig_argv


try:
    from deployments.prefect_patches import install_server_fixes

    install_server_fixes()
    report_path = os.environ.get("SP_SERVER_FIXES_REPORT")
    if report_path and is_prefect_test_server():
        report_fixes(report_path)
except Exception:
    # site.py would print one line and run the server without the fixes: stop it instead.
    traceback.print_exc()
    sys.stderr.flush()
    os._exit(1)
