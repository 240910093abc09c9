"""`make run`: the whole local stack in one terminal, on the embedded defaults.

Starts a Prefect server (SQLite under .data/), migrates our database, creates the process work
pool, registers blocks and prefect.yaml's deployments, starts one worker and our API, prints
the URLs, restarts any of them that dies (with a growing delay, said on the terminal), and
stops every process it started on Ctrl-C. Safe to run again: every step is idempotent.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from settings import PROJECT_DIR, get_settings


def prefect_url() -> str:
    """Where the stack's processes reach Prefect's server (on this host, loopback if it can)."""
    settings = get_settings()
    host = settings.prefect_host
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    return f"http://{host}:{settings.prefect_port}"


def logs_dir() -> Path:
    return get_settings().data_dir / "logs"


def temp_dir() -> Path:
    """The stack's TMPDIR: Prefect's runner leaves a `runner_storage` folder per flow-run
    process there (not in /tmp); emptied each time the stack starts."""
    return get_settings().data_dir / "tmp"


def empty_temp_dir() -> None:
    """`temp_dir()`, emptied: nothing of the stack runs while it starts."""
    shutil.rmtree(temp_dir(), ignore_errors=True)
    temp_dir().mkdir(parents=True)


def stack_env() -> dict[str, str]:
    """The environment every process of the stack shares."""
    settings = get_settings()
    env = dict(os.environ)
    # Let flow processes cache our modules' bytecode (some shells turn this off).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PREFECT_HOME", str(settings.data_dir / "prefect"))
    if settings.prefect_server_api_auth_string is not None:
        # The server's basic auth, as the user set it, is every client's (ours included).
        env.setdefault(
            "PREFECT_API_AUTH_STRING", settings.prefect_server_api_auth_string.get_secret_value()
        )
    env.update(
        PREFECT_API_URL=f"{prefect_url()}/api",
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        # Latency: the worker asks for due runs every second instead of every 10 s, and
        # claims runs due within the next minute (settings.prefetch_seconds), so their
        # processes have started before they are due, even 100 at once; the server keeps a
        # claimed run from going Running before its time.
        PREFECT_WORKER_QUERY_SECONDS=env.get("PREFECT_WORKER_QUERY_SECONDS", "1"),
        PREFECT_WORKER_PREFETCH_SECONDS=env.get(
            "PREFECT_WORKER_PREFETCH_SECONDS", str(settings.prefetch_seconds)
        ),
        # The scheduler plans new runs every 10 s (default 60 s) so a schedule created
        # through our API gets its first runs without a minute's wait.
        PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS=env.get(
            "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS", "10"
        ),
        # The example deployment reads our demo price feed, served only when asked for.
        DEMO_ROUTES=env.get("DEMO_ROUTES", "true"),
        # The crew scheduler calls our demo crew API unless one is configured.
        CREW_API_URL=settings.crew_api_url or f"{settings.public_api_url}/demo/run-crew",
        TMPDIR=str(temp_dir()),
        SP_PROJECT_DIR=str(PROJECT_DIR),
        SP_PUBLIC_API_URL=settings.public_api_url,
        SP_WORK_POOL_NAME=settings.work_pool_name,
    )
    return env


def worker_env(env: dict[str, str]) -> dict[str, str]:
    """The worker's environment, which its flow runs inherit.

    A SQLite-backed Prefect server answers 503 while a burst of writes holds its lock; the
    worker and flow runs retry those 10 times (default 5, with exponential backoff) so a burst
    does not crash a run. Our API keeps the default: it answers a client 503 sooner.

    The worker's own interpreter's folder comes first on PATH, so the pool's flow-run command
    (`python -m prefect.engine`) runs in the project's environment whether or not the shell
    that started us had it activated.
    """
    path = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", os.defpath)])
    return {"PREFECT_CLIENT_MAX_RETRIES": "10", **env, "PATH": path}


def worker_command(pool: str, worker_type: str | None = None) -> list[str]:
    """One worker on `pool`, of WORKER_TYPE by default (stop it with SIGINT: it ignores a
    single SIGTERM)."""
    worker_type = worker_type or get_settings().worker_type
    return [
        *[sys.executable, "-m", "deployments.prefect_server"],
        *["worker", "start", "--pool", pool, "--type", worker_type],
    ]


def prefect(*args: str, env: dict[str, str]) -> None:
    """Run a Prefect CLI command to completion, its output kept in `logs/setup.log`: Prefect's
    deploy output tells the user to start a worker (ours is about to start) and to run
    deployments without PREFECT_API_URL. On failure the output is shown and the stack stops."""
    done = subprocess.run(
        [sys.executable, "-m", "prefect", *args],
        env=env,
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
    )
    logs = logs_dir()
    logs.mkdir(parents=True, exist_ok=True)
    with open(logs / "setup.log", "a") as log:
        log.write(f"$ prefect {' '.join(args)}\n{done.stdout}{done.stderr}\n")
    if done.returncode != 0:
        print(done.stdout + done.stderr, flush=True)
        raise SystemExit(f"prefect {' '.join(args)} failed (code {done.returncode})")


def wait_until_up(url: str, what: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{what} exited with code {proc.returncode}; see {logs_dir()}")
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise SystemExit(f"{what} did not answer at {url} within {timeout:.0f}s")


def start(cmd: list[str], log_name: str, env: dict[str, str]) -> subprocess.Popen[bytes]:
    logs = logs_dir()
    logs.mkdir(parents=True, exist_ok=True)
    log = open(logs / f"{log_name}.log", "ab")  # noqa: SIM115 (lives as long as the process)
    return subprocess.Popen(
        cmd, env=env, cwd=PROJECT_DIR, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )


def group_members(pgid: int) -> list[int]:
    """The live (not zombie) processes of process group `pgid`, read from /proc; on a
    system without /proc, whether the group still answers a signal."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except OSError:
            return []
        return [pgid]
    members = []
    for entry in proc.iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z" and int(fields[3]) == pgid:
                members.append(int(entry.name))
    return members


def end_group(pgid: int, grace: float = 5.0) -> None:
    """What a stopped process leaves behind in its session (the warm worker's zygote and
    its runs, a server's helpers) gets SIGTERM, then SIGKILL after `grace` seconds, so
    Ctrl-C leaves no process running."""
    deadline = time.monotonic() + grace
    sent = False
    while group_members(pgid):
        if time.monotonic() >= deadline:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGKILL)
            return
        if not sent:
            with contextlib.suppress(OSError):
                os.killpg(pgid, signal.SIGTERM)
            sent = True
        time.sleep(0.1)


def stop(procs: list[tuple[str, subprocess.Popen[bytes]]], seconds: float = 20) -> None:
    """Stop each process in turn, the last started first: the API and the worker while the
    Prefect server they talk to is still up (the worker hands back the runs it claimed),
    then the server. SIGINT (a Prefect worker ignores one SIGTERM), `seconds` to stop, then
    SIGKILL; then whatever it left in its process group (each was started in a session of
    its own)."""
    for name, proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            print(f"  {name} did not stop in time; killing it")
            with contextlib.suppress(OSError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        end_group(proc.pid)


# How to start a process of the stack again: its command, log name and environment.
Command = tuple[list[str], str, dict[str, str]]
# A process up this long has recovered: its next failure waits the shortest delay again.
STABLE_SECONDS = 60.0


def restart_delay(restarts: int, first: float = 1.0, most: float = 30.0) -> float:
    """Seconds before restarting a process that has been restarted `restarts` times in a
    row: 1, 2, 4, ... up to `most`, so a process that cannot start does not spin."""
    return float(min(most, first * 2 ** min(restarts, 30)))


def supervise(
    procs: list[tuple[str, subprocess.Popen[bytes]]],
    commands: dict[str, Command],
    *,
    poll: float = 0.5,
    until: Callable[[], bool] = lambda: False,
) -> None:
    """Keep every process of `procs` running until Ctrl-C (or `until()`): one that exits is
    started again after `restart_delay`, said on the terminal; `procs` holds the current
    processes (what `stop` stops)."""
    restarts = dict.fromkeys(commands, 0)
    started = dict.fromkeys(commands, time.monotonic())
    due: dict[str, float] = {}
    while not until():
        now = time.monotonic()
        for index, (name, proc) in enumerate(procs):
            if name in due:
                if now >= due[name]:
                    del due[name]
                    procs[index] = (name, start(*commands[name]))
                    started[name] = now
                    restarts[name] += 1
                    print(f"{name} restarted (restart {restarts[name]})", flush=True)
            elif proc.poll() is not None:
                if now - started[name] >= STABLE_SECONDS:
                    restarts[name] = 0
                delay = restart_delay(restarts[name])
                due[name] = now + delay
                print(
                    f"{name} exited with code {proc.returncode}; restarting it in {delay:.0f}s "
                    f"(log: {logs_dir() / commands[name][1]}.log)",
                    flush=True,
                )
        time.sleep(poll)


async def prepare_prefect(env: dict[str, str]) -> None:
    """The work pool, the automation that ends runs whose worker died (both idempotent), and
    the pool's runs a previous stack left Pending back to Scheduled."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from deployments.automations import ensure_automation, unresponsive_runs_automation
    from deployments.work_pool import ensure_work_pool, hand_back_pending_runs

    with temporary_settings({PREFECT_API_URL: env["PREFECT_API_URL"]}):
        async with get_client() as client:
            await ensure_work_pool(client)
            await ensure_automation(client, unresponsive_runs_automation())
            if handed_back := await hand_back_pending_runs(client, get_settings().work_pool_name):
                print(f"  {handed_back} run(s) left Pending by the last stop: Scheduled again")


def main() -> None:
    settings = get_settings()
    env = stack_env()
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    procs: list[tuple[str, subprocess.Popen[bytes]]] = []
    commands: dict[str, Command] = {}
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        # The first Ctrl-C (or SIGTERM) starts the shutdown; repeats (a terminal and `uv run`
        # may both forward one) are ignored, so they cannot cut the shutdown short.
        nonlocal stopping
        if not stopping:
            stopping = True
            raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    began = time.monotonic()
    try:
        empty_temp_dir()
        print("Starting the Prefect server ...", flush=True)
        commands["prefect server"] = (
            [
                *[sys.executable, "-m", "deployments.prefect_server", "server", "start"],
                *["--host", settings.prefect_host, "--port", str(settings.prefect_port)],
            ],
            "prefect-server",
            env,
        )
        server = start(*commands["prefect server"])
        procs.append(("prefect server", server))
        print("Migrating our database ...", flush=True)
        subprocess.run([sys.executable, "-m", "db.migrate"], env=env, check=True, cwd=PROJECT_DIR)
        wait_until_up(f"{prefect_url()}/api/health", "the Prefect server", server)
        print("Preparing Prefect: work pool, automation, blocks, deployments ...", flush=True)
        asyncio.run(prepare_prefect(env))
        prefect("block", "register", "-m", "blocks", env=env)
        prefect("--no-prompt", "deploy", "--all", env=env)
        print(f"  prefect.yaml's deployments registered (output: {logs_dir()}/setup.log)")
        print("Starting the worker and the API ...", flush=True)
        commands["worker"] = (worker_command(settings.work_pool_name), "worker", worker_env(env))
        procs.append(("worker", start(*commands["worker"])))
        commands["api"] = (
            [
                *[sys.executable, "-m", "uvicorn", "api.main:app"],
                *["--host", settings.api_host, "--port", str(settings.api_port)],
            ],
            "api",
            env,
        )
        api = start(*commands["api"])
        procs.append(("api", api))
        api_url = f"http://{settings.api_host}:{settings.api_port}"
        wait_until_up(f"{api_url}/health", "the API", api)
        print(
            f"\nscheduled-pipelines is up in {time.monotonic() - began:.1f}s\n"
            f"  Prefect UI   {prefect_url()}\n"
            f"  Prefect API  {prefect_url()}/api\n"
            f"  Our API      {api_url}\n"
            f"  API docs     {api_url}/docs\n"
            f"  Logs         {logs_dir()}\n"
            f"Try: PREFECT_API_URL={prefect_url()}/api .venv/bin/prefect deployment run "
            "api-call/demo-prices\n"
            f"     curl '{api_url}/api/records?schedule=demo-prices'\n"
            "A process that dies is restarted; Ctrl-C stops everything.",
            flush=True,
        )
        supervise(procs, commands)
    except KeyboardInterrupt:
        print("\nStopping ...", flush=True)
    finally:
        stopping = True
        stop(procs)
        print("Stopped.", flush=True)


if __name__ == "__main__":
    main()
