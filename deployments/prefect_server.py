"""Prefect's CLI with our fixes installed: `python -m deployments.prefect_server server start ...`.

The same command line, options and settings as `prefect server start` (or any other Prefect
command); the process first installs `deployments.prefect_patches`' fixes (see there why):
schedule checks done once, cron runs planned by Debian cron's DST rules, and garbage collected
off the event loop. On a Prefect (or Python)
the fixes were not checked against, it stops at once with `PrefectPatchError` instead.
"""

from __future__ import annotations

import os

from deployments.prefect_patches import install_server_fixes


def main() -> None:
    # Prefect's server reports usage to Prefect's telemetry service unless told not to; ours
    # never does (a value set in the environment is kept as given).
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    from prefect.cli import app

    install_server_fixes()
    app()


if __name__ == "__main__":
    main()
