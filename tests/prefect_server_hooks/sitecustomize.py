"""Python imports this at start-up in the test Prefect server's process only.

`prefect_test_harness` starts its server as `python -m uvicorn ... prefect.server.api.server:
create_app`, with no way to run our code first; tests/conftest.py puts this directory on that
process's PYTHONPATH, so the server under test gets the fixes `make run`'s server gets from
`python -m deployments.prefect_server` (see deployments/prefect_patches.py).
"""

from deployments.prefect_patches import install_server_fixes

install_server_fixes()
