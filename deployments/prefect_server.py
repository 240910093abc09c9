"""Prefect's CLI with our fixes installed: `python -m deployments.prefect_server server start ...`.

The same command line, options and settings as `prefect server start` (or any other Prefect
command); the process first installs `deployments.prefect_patches`' fixes (see there why):
schedule checks done once, cron runs planned by Debian cron's DST rules, and garbage collected
off the event loop. On a Prefect (or Python)
the fixes were not checked against, it stops at once with `PrefectPatchError` instead.
"""

from __future__ import annotations

from deployments.prefect_patches import install_server_fixes


def main() -> None:
    from prefect.cli import app

    install_server_fixes()
    app()


if __name__ == "__main__":
    main()
