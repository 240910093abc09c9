"""`make run`'s stack: every command the README and the stack's banner print works as written
against it; a process that dies is started again; Ctrl-C stops every process it started."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from settings import PROJECT_DIR
from tests.utils.http_source import HttpSource, Reply, serve_http_source
from tests.utils.ports import free_port
from tests.utils.readme import Command, commands
from tests.utils.runs import FINAL_STATES, flow_run, wait_until

pytestmark = pytest.mark.e2e

README = PROJECT_DIR / "README.md"
# What the README's examples assume, and where the test's stack really is.
README_API, README_PREFECT, README_SERVICE = "127.0.0.1:8000", "127.0.0.1:4200", "localhost:7006"
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# curl as written, except that an HTTP error fails the command (a reader sees the error).
CURL_FAILS_ON_HTTP_ERRORS = 'curl() { command curl --silent --show-error --fail-with-body "$@"; }\n'
JOB_RESULT = {"success": True, "itemsProcessed": 3, "itemsSucceeded": 3, "itemsFailed": 0}


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


def split_assignments(words: list[str]) -> tuple[dict[str, str], list[str]]:
    """`A=1 B=2 make run` -> ({"A": "1", "B": "2"}, ["make", "run"])."""
    env: dict[str, str] = {}
    while words and "=" in words[0] and not words[0].startswith("="):
        name, value = words[0].split("=", 1)
        env[name], words = value, words[1:]
    return env, words


def make_run_env(document: list[Command]) -> dict[str, str]:
    """The variables the README sets on its `make run` lines (`EMAIL_SERVICE_URL=... make run`)."""
    env: dict[str, str] = {}
    for command in document:
        assignments, words = split_assignments(command.words)
        if words == ["make", "run"]:
            env.update(assignments)
    return env


def pointed_at(text: str, api_port: int, prefect_port: int, service_url: str) -> str:
    """A README command pointed at the test's stack and service: only their ports change."""
    return (
        text.replace(README_API, f"127.0.0.1:{api_port}")
        .replace(README_PREFECT, f"127.0.0.1:{prefect_port}")
        .replace(README_SERVICE, service_url.removeprefix("http://"))
    )


@dataclass
class Stack:
    """`python -m deployments.stack` (what `make run` runs) on free ports, its output read as
    it comes."""

    process: subprocess.Popen[str]
    api_port: int
    prefect_port: int
    service: HttpSource
    data: Path
    lines: list[str] = field(default_factory=list)

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    @property
    def prefect_api(self) -> str:
        return f"http://127.0.0.1:{self.prefect_port}/api"

    def output(self) -> str:
        return "".join(self.lines)

    def as_written(self, text: str) -> str:
        return pointed_at(text, self.api_port, self.prefect_port, self.service.url)

    def healthy(self) -> bool:
        try:
            return httpx.get(f"{self.api}/health", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    def stop(self) -> str:
        """Ctrl-C, then everything it printed."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            self.process.wait(timeout=60)
        return self.output()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    data = tmp_path_factory.mktemp("stack")
    with serve_http_source() as service:
        service.route("/api/jobs/weekly-digest", Reply(200, JOB_RESULT))
        api_port, prefect_port = free_port(), free_port()
        readme_env = {
            name: pointed_at(value, api_port, prefect_port, service.url)
            for name, value in make_run_env(commands(README.read_text())).items()
        }
        env = {
            **os.environ,
            "DATA_DIR": str(data),
            "PREFECT_HOME": str(data / "prefect"),
            "DATABASE_URL": f"sqlite:///{data / 'pipelines.db'}",
            "PREFECT_PORT": str(prefect_port),
            "API_PORT": str(api_port),
            "PUBLIC_API_URL": f"http://127.0.0.1:{api_port}",
            "WORK_POOL_NAME": "stack-test",
            **readme_env,
        }
        for inherited in ("PREFECT_API_URL", "CREW_API_URL"):  # the session's, not the stack's
            env.pop(inherited, None)
        process = subprocess.Popen(
            [sys.executable, "-m", "deployments.stack"],
            cwd=PROJECT_DIR,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        started = Stack(process, api_port, prefect_port, service, data)
        output = process.stdout
        assert output is not None
        reader = threading.Thread(target=lambda: started.lines.extend(output), daemon=True)
        reader.start()
        try:
            wait_until(
                lambda: started.healthy() or process.poll() is not None, "the stack up", 180, 0.5
            )
            assert process.poll() is None, started.output()
            yield started
        finally:
            started.stop()
            reader.join(timeout=10)


def shell_env(home: Path) -> dict[str, str]:
    """A new terminal on a fresh machine: no PREFECT_API_URL, no project venv on PATH."""
    venv_bin = str(PROJECT_DIR / ".venv" / "bin")
    path = [p for p in os.environ["PATH"].split(os.pathsep) if p and p != venv_bin]
    return {"PATH": os.pathsep.join(path), "HOME": str(home), "LANG": "C.UTF-8"}


def run_as_written(stack: Stack, command: Command, home: Path) -> str:
    """Run `command` as a reader would in a new shell; every flow run its output names must
    complete."""
    done = subprocess.run(
        ["bash", "-c", CURL_FAILS_ON_HTTP_ERRORS + stack.as_written(command.text)],
        cwd=PROJECT_DIR,
        env=shell_env(home),
        capture_output=True,
        text=True,
        timeout=180,
    )
    shown = f"{command}\nexit {done.returncode}\n{done.stdout}\n{done.stderr}"
    assert done.returncode == 0, shown
    for run_id in set(UUID.findall(done.stdout + done.stderr)):
        if httpx.get(f"{stack.prefect_api}/flow_runs/{run_id}", timeout=30).status_code != 200:
            continue  # a deployment's or a record's id

        def finished(run_id: str = run_id) -> dict[str, Any] | None:
            run = flow_run(stack.prefect_api, run_id)
            return run if run["state_type"] in FINAL_STATES else None

        run = wait_until(finished, f"flow run {run_id} of {command} finishing", 120, 0.5)
        assert run["state_type"] == "COMPLETED", f"{shown}\nrun {run_id}: {run['state']}"
    return done.stdout


def runnable(command: Command) -> Command | None:
    """What the test runs for a README command; None for the ones it is itself."""
    words = split_assignments(command.words)[1]
    if words[0] == "make":  # `make run`: the stack under test; `make test`: the suite running this
        return None
    if words[0] == ".venv/bin/pytest":  # the suite, or part of it
        return None
    if words[:2] == [".venv/bin/python", "-m"] and words[2].startswith("benchmarks."):
        # Each benchmark runs for minutes: check it starts and reads its arguments.
        return Command(f"{command.words[0]} -m {words[2]} --help", command.section, command.line)
    return command


def test_every_command_the_readme_and_the_banner_print_works_as_written(stack, tmp_path):
    # The README's example converts an existing JSON-object Secret block named `source-creds`.
    saved = subprocess.run(
        [
            sys.executable,
            "-c",
            "from prefect.blocks.system import Secret; "
            "Secret(value={'Authorization': 'Bearer x'}).save('source-creds', overwrite=True)",
        ],
        env={**os.environ, "PREFECT_API_URL": stack.prefect_api},
        capture_output=True,
        text=True,
    )
    assert saved.returncode == 0, saved.stderr
    ran = []
    for command in commands(README.read_text()):
        if (runnable_command := runnable(command)) is not None:
            ran.append(command.line)
            run_as_written(stack, runnable_command, tmp_path)
    assert len(ran) >= 15, ran

    # The banner's next steps, as `make run` printed them.
    banner = stack.output().split("\nTry:", 1)[1].split("\nA process that dies", 1)[0]
    steps = [line.strip() for line in banner.splitlines() if line.strip()]
    assert len(steps) == 2, banner
    outputs = [
        run_as_written(stack, Command(step, "banner", n), tmp_path) for n, step in enumerate(steps)
    ]
    assert json.loads(outputs[-1])["data"], "the demo run stored no records"
    # The job registry example reached the service make run was given.
    assert [r["path"] for r in stack.service.requests] == ["/api/jobs/weekly-digest"]


def test_a_process_that_dies_is_started_again(stack):
    # Fault item 13: a dead worker or API is started again; the stack goes on.
    for name, command in [("worker", "worker start"), ("api", "api.main:app")]:
        (pid,) = [p for p in children_of(stack.process.pid) if command in cmdline(p)][:1]
        os.kill(pid, signal.SIGKILL)
        wait_until(
            lambda command=command, pid=pid: any(
                p != pid and command in cmdline(p) and alive(p)
                for p in children_of(stack.process.pid)
            ),
            f"the {name} restarted",
            60,
            0.5,
        )
        assert stack.process.poll() is None
    wait_until(stack.healthy, "the API healthy again", 60, 0.5)
    output = stack.output()
    assert "worker exited with code -9; restarting it in 1s" in output
    assert "api restarted (restart 1)" in output


def test_ctrl_c_stops_everything_it_started(stack):
    assert httpx.get(f"http://127.0.0.1:{stack.prefect_port}/").status_code == 200  # the UI
    demo = httpx.get(f"{stack.api}/api/schedules/demo-prices").json()
    assert demo["timing"] == {"type": "cron", "cron": "*/5 * * * *", "timezone": "UTC"}
    started = children_of(stack.process.pid)
    assert len(started) >= 3  # server, worker, API (and their own children)
    output = stack.stop()
    assert "Stopped." in output
    # Prefect's deploy output (start a worker; run without PREFECT_API_URL) is kept in a log.
    assert "prefect.yaml's deployments registered" in output
    assert "start a worker" not in output
    assert "start a worker" in (stack.data / "logs" / "setup.log").read_text()
    assert [(pid, cmdline(pid)) for pid in started if alive(pid)] == []
    # Prefect's runner_storage folders of the flow runs stay in the stack's own TMPDIR.
    assert list((stack.data / "tmp" / "runner_storage").iterdir())
