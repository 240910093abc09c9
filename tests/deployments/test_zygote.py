"""The zygote forks one process per request, reports each one's exit code (negative: killed by
that signal), and a code change makes the next run go to a new zygote while the old one drains.
No Prefect server: the children's engine fails fast without a flow run id, or hangs on an API
that never answers."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from deployments.warm_worker import LOST_EXIT_CODE, ZygoteProcess, Zygotes

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def silent_api() -> Iterator[str]:
    """A Prefect API URL whose server accepts connections and never answers."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/api"


def engine_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT__")}
    return {**env, "PREFECT_API_URL": "http://127.0.0.1:9/api", **extra}


async def wait_alive(pid: int) -> None:
    for _ in range(50):
        os.kill(pid, 0)
        await asyncio.sleep(0.05)


def test_a_fork_reports_its_exit_code_and_a_killed_one_its_signal(silent_api: str) -> None:
    async def scene() -> tuple[int, int]:
        zygote = await ZygoteProcess.start()
        try:
            # No flow run id: the engine refuses at once, as `python -m prefect.engine` does.
            refused = await zygote.fork(engine_env(), None)
            hanging = await zygote.fork(
                engine_env(PREFECT__FLOW_RUN_ID=str(uuid.uuid4()), PREFECT_API_URL=silent_api),
                None,
            )
            assert hanging.pid != refused.pid and hanging.returncode is None
            await wait_alive(hanging.pid)
            os.kill(hanging.pid, signal.SIGKILL)
            return await refused.wait(), await hanging.wait()
        finally:
            await zygote.aclose()

    assert asyncio.run(scene()) == (1, -signal.SIGKILL)


def test_changed_code_sends_new_runs_to_a_new_zygote_and_the_old_one_drains(
    silent_api: str,
) -> None:
    stamp = ["v1"]

    async def scene() -> None:
        zygotes = Zygotes(stamp=lambda: (("flows/x.py", len(stamp[0])), (stamp[0], 0)))
        try:
            old = await zygotes.current()
            assert await zygotes.current() is old  # same code: same zygote
            running = await old.fork(
                engine_env(PREFECT__FLOW_RUN_ID=str(uuid.uuid4()), PREFECT_API_URL=silent_api),
                None,
            )
            stamp[0] = "v2"
            new = await zygotes.current()
            assert new is not old and old.retired and old.process.returncode is None
            assert await (await new.fork(engine_env(), None)).wait() == 1
            os.kill(running.pid, signal.SIGKILL)
            assert await running.wait() == -signal.SIGKILL  # the old zygote still reported it
            assert await asyncio.wait_for(old.process.wait(), 10) == 0  # then it left
        finally:
            await zygotes.aclose()

    asyncio.run(scene())


def test_a_zygote_that_dies_reports_its_running_children_lost(silent_api: str) -> None:
    async def scene() -> int:
        zygote = await ZygoteProcess.start()
        running = await zygote.fork(
            engine_env(PREFECT__FLOW_RUN_ID=str(uuid.uuid4()), PREFECT_API_URL=silent_api), None
        )
        zygote.process.kill()
        try:
            return await asyncio.wait_for(running.wait(), 10)
        finally:
            os.kill(running.pid, signal.SIGKILL)
            await zygote.aclose()

    assert asyncio.run(scene()) == LOST_EXIT_CODE


def test_a_run_shares_the_zygotes_settings_only_when_their_inputs_are_the_same(
    tmp_path: Path,
) -> None:
    from deployments.zygote import settings_inputs

    home, run = tmp_path / "home", tmp_path / "run"
    home.mkdir()
    run.mkdir()
    (home / "pyproject.toml").write_text("[project]\nname = 'x'\n")  # no Prefect settings
    env = {"PREFECT_API_URL": "http://127.0.0.1:1/api", "PATH": "/bin", "PREFECT_HOME": str(home)}
    zygote = settings_inputs(env, str(home))
    # What describes the run, not Prefect's settings, may differ.
    run_env = {**env, "PREFECT__FLOW_RUN_ID": "x", "PREFECT__FLOW_ENTRYPOINT": "m:f", "PATH": "/"}
    assert settings_inputs(run_env, str(run)) == zygote
    assert settings_inputs({**run_env, "PREFECT_FLOWS_DEFAULT_RETRIES": "2"}, str(run)) != zygote
    assert (
        settings_inputs({k: v for k, v in env.items() if k != "PREFECT_API_URL"}, str(run))
        != zygote
    )
    (run / ".env").write_text("SP_OTHER=1\n")  # read by Prefect only for its own variables
    assert settings_inputs(run_env, str(run)) == zygote
    (run / ".env").write_text("PREFECT_LOGGING_LEVEL=DEBUG\n")
    assert settings_inputs(run_env, str(run)) != zygote
    (run / ".env").unlink()
    (run / "pyproject.toml").write_text("[tool.prefect]\nlogging.level = 'DEBUG'\n")
    assert settings_inputs(run_env, str(run)) != zygote
    (run / "pyproject.toml").unlink()
    (home / "profiles.toml").write_text("active = 'default'\n")  # a profile written since
    assert settings_inputs(run_env, str(run)) != zygote
