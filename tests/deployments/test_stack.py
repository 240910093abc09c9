"""`make run`'s stack starts, answers, and stops every process it started on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from settings import PROJECT_DIR
from tests.utils.ports import free_port

pytestmark = pytest.mark.e2e


def children_of(pid: int) -> set[int]:
    """Every descendant of `pid`, read from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return ""


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_the_stack_comes_up_and_ctrl_c_stops_everything(tmp_path):
    prefect_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "DATA_DIR": str(tmp_path),
        "PREFECT_HOME": str(tmp_path / "prefect"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'pipelines.db'}",
        "PREFECT_PORT": str(prefect_port),
        "API_PORT": str(api_port),
        "PUBLIC_API_URL": f"http://127.0.0.1:{api_port}",
        "WORK_POOL_NAME": "stack-test",
    }
    env.pop("PREFECT_API_URL", None)
    stack = subprocess.Popen(
        [sys.executable, "-m", "deployments.stack"],
        cwd=PROJECT_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and stack.poll() is None:
            try:
                if httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        assert stack.poll() is None, stack.stdout.read() if stack.stdout else ""
        assert httpx.get(f"http://127.0.0.1:{prefect_port}/").status_code == 200  # the UI
        demo = httpx.get(f"http://127.0.0.1:{api_port}/api/schedules/demo-prices").json()
        assert demo["timing"] == {"type": "cron", "cron": "*/5 * * * *", "timezone": "UTC"}
        started = children_of(stack.pid)
        assert len(started) >= 3  # server, worker, API (and their own children)

        # Fault item 13: a dead worker or API is started again; the stack goes on.
        for name, command in [("worker", "worker start"), ("api", "api.main:app")]:
            (pid,) = [p for p in children_of(stack.pid) if command in cmdline(p)][:1]
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                again = [p for p in children_of(stack.pid) if command in cmdline(p) and alive(p)]
                if again and again[0] != pid:
                    break
                time.sleep(0.5)
            else:
                raise AssertionError(f"the {name} was not restarted")
            assert stack.poll() is None
        up = time.monotonic() + 60
        while time.monotonic() < up:
            try:
                if httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.5)
        assert httpx.get(f"http://127.0.0.1:{api_port}/health", timeout=5).status_code == 200
        started = children_of(stack.pid)
    finally:
        stack.send_signal(signal.SIGINT)
        output, _ = stack.communicate(timeout=60)
    assert "Stopped." in output
    # Prefect's deploy output (start a worker; run without PREFECT_API_URL) is kept in a log.
    assert "prefect.yaml's deployments registered" in output
    assert "start a worker" not in output
    assert "start a worker" in (tmp_path / "logs" / "setup.log").read_text()
    assert "worker exited with code -9; restarting it in 1s" in output
    assert "api restarted (restart 1)" in output
    assert [(pid, cmdline(pid)) for pid in started if alive(pid)] == []
