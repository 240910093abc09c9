"""The warm parent of our flow runs: Prefect and every flow imported once, a fork per run.

`python -m deployments.zygote FD` is started by the warm worker (deployments/warm_worker.py)
with one end of a socket pair as FD. It imports Prefect's engine and every module under
`flows/`, freezes that heap (so forked children share its pages instead of copying them as the
collector walks them), says it is ready, and then serves two kinds of line-delimited JSON:

- the worker sends `{"run": n, "env": {...}, "cwd": "..."}`; the zygote forks a child that
  becomes what `python -m prefect.engine` would be in that environment and folder, and answers
  `{"run": n, "pid": pid}`;
- when a child ends, the zygote reaps it and sends `{"exit": pid, "code": code}`, with
  subprocess's convention for the code (negative: killed by that signal).

The zygote is single-threaded and, once warmed up (`warm_up`: one server version check, whose
event loop and connection are closed again), holds no event loop, socket or Prefect client, so
a fork of it is a clean process (unlike a fork of the worker, which holds threads, sockets and
a loop: the reason Prefect's own helpers spawn). It ignores Ctrl-C (the worker stops it by
closing the socket) and exits once the socket is closed and its last child has been reaped.
"""

from __future__ import annotations

import asyncio
import atexit
import gc
import importlib
import json
import os
import pkgutil
import runpy
import selectors
import signal
import socket
import sys
import threading
import traceback
import warnings
from typing import Any, NoReturn

# What every flow run needs before its own code: Prefect's engine and client side.
PREFECT_MODULES = (
    "prefect",
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.task_engine",
    "prefect.flows",
    "prefect.tasks",
    "prefect.client.orchestration",
    "prefect.runner.storage",
    "prefect.deployments.steps",
)
FLOWS_PACKAGE = "flows"


def preload() -> list[str]:
    """Import Prefect's engine and every module of the flows package; the names imported."""
    names = list(PREFECT_MODULES)
    for name in names:
        importlib.import_module(name)
    package = importlib.import_module(FLOWS_PACKAGE)
    for module in pkgutil.iter_modules(package.__path__):
        name = f"{FLOWS_PACKAGE}.{module.name}"
        importlib.import_module(name)
        names.append(name)
    return names


def warm_up() -> dict[str, int]:
    """Do once, before forking, the first-time work every run would otherwise repeat.

    Measured in the runs' processes (py-spy, 30 run-nows): each built Prefect's TLS context
    again (~17 ms: Prefect asks for its API's CA file, here SSL_CERT_FILE, not certifi's),
    checked the server's version over HTTP with one more (~36 ms, before its suspension
    observer could start), imported croniter and listed time zones to validate its
    deployment's schedules (~30 ms), and completed pydantic models Prefect defines lazily
    (~15 ms). All of it is the same in every run of this worker, so the zygote does it and
    its children inherit the result; a run whose environment differs (another API URL or CA
    file) does its own, as before. Returns what was warmed, for the ready message.
    """
    from datetime import timedelta

    import certifi
    import pydantic
    from prefect._internal.version_checking import check_server_version
    from prefect.client.schemas.schedules import CronSchedule, IntervalSchedule, RRuleSchedule
    from prefect.logging import get_logger
    from prefect.settings import PREFECT_API_SSL_CERT_FILE, PREFECT_API_URL

    from blocks.http import tls_context
    from deployments.prefect_patches import install_client_fixes, load_ca_bundle_once

    install_client_fixes()
    # The file Prefect's clients ask for: PREFECT_API_SSL_CERT_FILE, else certifi's.
    cafile = PREFECT_API_SSL_CERT_FILE.value() or certifi.where()
    load_ca_bundle_once().create_default_context(cafile=cafile)
    tls_context()
    CronSchedule(cron="0 9 * * 1-5", timezone="Europe/Paris")
    RRuleSchedule(rrule="FREQ=DAILY;BYHOUR=9", timezone="Europe/Paris")
    IntervalSchedule(interval=timedelta(hours=1), timezone="Europe/Paris")
    rebuilt = 0
    models: list[type[pydantic.BaseModel]] = [pydantic.BaseModel]
    while models:
        model = models.pop()
        models += model.__subclasses__()
        module = getattr(model, "__module__", "")
        client_side = module.startswith("prefect.") and not module.startswith("prefect.server.")
        if (
            client_side
            and not model.__pydantic_complete__
            and model.model_rebuild(raise_errors=False)
        ):
            rebuilt += 1
    api_url = PREFECT_API_URL.value()
    if api_url:  # one check for every run against this API (Prefect caches it per process)
        asyncio.run(check_server_version(api_url, get_logger("zygote"), raise_on_error=False))
    if threading.active_count() != 1:  # a fork must not copy a thread's half-held locks
        raise RuntimeError(f"the zygote has threads after warming up: {threading.enumerate()}")
    return {"models": rebuilt}


# Files in the working folder Prefect reads settings from, and what of each it reads.
SETTINGS_FILES = {".env": "PREFECT_", "prefect.toml": "", "pyproject.toml": "[tool.prefect"}


def settings_inputs(env: dict[str, str], cwd: str) -> tuple[Any, ...]:
    """What Prefect computes its settings from, in an environment and working folder.

    Its `PREFECT_` variables (not the `PREFECT__` ones, which describe a run, not settings),
    its profiles file, and the files in the folder it reads (`.env`, `prefect.toml`,
    `pyproject.toml`) when they hold any Prefect setting. Equal inputs give equal settings.
    """
    variables = sorted(
        (k, v) for k, v in env.items() if k.startswith("PREFECT_") and not k.startswith("PREFECT__")
    )
    files: list[tuple[str, str]] = []
    for name, marker in SETTINGS_FILES.items():
        try:
            with open(os.path.join(cwd, name), encoding="utf-8", errors="replace") as file:
                text = file.read()
        except OSError:
            continue
        if marker in text:
            files.append((name, text))
    profiles = env.get("PREFECT_PROFILES_PATH") or os.path.join(
        env.get("PREFECT_HOME") or os.path.expanduser("~/.prefect"), "profiles.toml"
    )
    try:
        stat = os.stat(profiles)
        profile: tuple[int, int] | None = (stat.st_mtime_ns, stat.st_size)
    except OSError:
        profile = None
    return (tuple(variables), tuple(files), profile)


# The variables our flow decorators read when their module runs (flows/run_controls.py).
FLOW_OPTIONS_PREFIX = "SCHEDULE_"


def flow_inputs(env: dict[str, str]) -> tuple[tuple[str, str], ...]:
    """What our flow modules read from the environment when they are imported."""
    return tuple(sorted((k, v) for k, v in env.items() if k.startswith(FLOW_OPTIONS_PREFIX)))


def run_engine(
    env: dict[str, str],
    cwd: str | None,
    warm: tuple[Any, ...] | None,
    flows_read: tuple[tuple[str, str], ...] = (),
) -> NoReturn:
    """In a forked child: become `python -m prefect.engine` in `env` and `cwd`, then exit.

    Prefect read its settings when the zygote imported it. A run whose settings inputs are
    the zygote's (`warm`: a job that sets no Prefect setting of its own) keeps them; any
    other run reads them again from its environment (~50-100 ms), and our flow modules are
    imported again if they differ, or if what they read (`flows_read`: the zygote's
    `flow_inputs`) does. Exit handlers run as at a normal interpreter exit (Prefect
    drains its log and event workers in them).
    """
    code = 1
    try:
        os.environ.clear()
        os.environ.update(env)
        if cwd:
            os.chdir(cwd)
        from prefect.context import refresh_global_settings_context
        from prefect.settings import get_current_settings

        imported_with = get_current_settings()
        if settings_inputs(env, os.getcwd()) != warm:
            refresh_global_settings_context()
        if get_current_settings() != imported_with or flow_inputs(env) != flows_read:
            # The flow modules run again (their third-party imports stay warm): a flow
            # decorator reads settings such as PREFECT_FLOWS_DEFAULT_RETRIES and our run
            # controls (a timeout), which a deployment sets for its runs through its job
            # variables, when its module runs. With the zygote's own they would do what
            # they did (~25 ms per run).
            for name in [m for m in sys.modules if m == FLOWS_PACKAGE or m.startswith("flows.")]:
                del sys.modules[name]
        sys.argv = [sys.argv[0]]  # the engine reads the flow run id from PREFECT__FLOW_RUN_ID
        with warnings.catch_warnings():
            # runpy notes that prefect.engine is imported already: it is, in the zygote, and
            # its code runs again here as __main__, as `python -m prefect.engine` runs it.
            warnings.filterwarnings("ignore", "'prefect.engine' found in sys.modules")
            runpy.run_module("prefect.engine", run_name="__main__", alter_sys=True)
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            atexit._run_exitfuncs()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)


class Zygote:
    """The serving loop: fork on request, reap and report exits."""

    def __init__(self, sock: socket.socket, settings: tuple[Any, ...] | None = None):
        self.sock = sock
        self.settings = settings  # settings_inputs() of the zygote, which its runs may share
        self.flows_read = flow_inputs(dict(os.environ))  # what its flow modules were given
        self.children: set[int] = set()
        self.pending = b""
        self.open = True
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(wake_w, False)
        self.wake_w = wake_w
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes select through the pipe
        self.selector = selectors.DefaultSelector()
        self.selector.register(sock, selectors.EVENT_READ)
        self.selector.register(self.wake_r, selectors.EVENT_READ)

    def send(self, message: dict[str, Any]) -> None:
        if not self.open:
            return
        try:
            self.sock.sendall(json.dumps(message).encode() + b"\n")
        except OSError:  # the worker is gone: finish the children, then leave
            self.open = False

    def serve(self) -> None:
        while self.open or self.children:
            for key, _ in self.selector.select(timeout=5):
                if key.fileobj is self.sock:
                    self.receive()
                else:
                    os.read(self.wake_r, 4096)
            self.reap()

    def receive(self) -> None:
        data = self.sock.recv(1 << 20) if self.open else b""
        if not data:
            self.open = False
            self.selector.unregister(self.sock)
            return
        self.pending += data
        while b"\n" in self.pending:
            line, self.pending = self.pending.split(b"\n", 1)
            request = json.loads(line)
            pid = os.fork()
            if pid == 0:
                self.become_child()
                run_engine(request["env"], request.get("cwd"), self.settings, self.flows_read)
            self.children.add(pid)
            self.send({"run": request["run"], "pid": pid})

    def become_child(self) -> None:
        """Drop what is the zygote's: its socket, selector, wake-up pipe and signal handlers."""
        self.selector.close()
        self.sock.close()
        signal.set_wakeup_fd(-1)
        os.close(self.wake_r)
        os.close(self.wake_w)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)

    def reap(self) -> None:
        while self.children:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                self.children.clear()
                return
            if pid == 0:
                return
            self.children.discard(pid)
            self.send({"exit": pid, "code": os.waitstatus_to_exitcode(status)})


def main() -> None:
    sock = socket.socket(fileno=int(sys.argv[1]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    settings = settings_inputs(dict(os.environ), os.getcwd())  # what Prefect's import reads
    modules = preload()
    warmed = warm_up()
    gc.collect()
    gc.freeze()  # the children share these pages: the collector leaves them untouched
    zygote = Zygote(sock, settings)
    zygote.send({"ready": os.getpid(), "modules": len(modules), **warmed})
    zygote.serve()


if __name__ == "__main__":
    main()
