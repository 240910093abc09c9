"""The job template of our work pool: what a run may choose, and what it may not.

Prefect's process worker template makes every field of a run's job a variable, `command`,
`env` and `working_dir` included, and any deployment or flow run may set its variables
(`job_variables`): anyone who can create a flow run could make the worker execute a command
of their choosing (`{"job_variables": {"command": "touch /tmp/x"}}`), or the same through
`env` (`PYTHONPATH`, `LD_PRELOAD`) or `working_dir`. Our template fixes those three; the only
variables are the harmless ones Prefect's has (`name`, `labels`, `stream_output`), a run's
flow retries and its schedule's run controls (backoff, timeout, and the `controls` object the
warm worker reads), and Prefect's server refuses any other variable (422,
`additionalProperties`), when it creates a run. Retries reach the run as the settings
Prefect's flow decorator reads its defaults from, the backoff and timeout as the `SCHEDULE_*`
variables our flows read (flows/run_controls.py). A run may set its own controls (say,
`controls: {}` to start outside its windows): whoever may create a run may also run it now.

Two holes Prefect leaves, and how far they are closed: Prefect's server checks a deployment's
job variables when it is created but not when a PATCH leaves its pool alone, and its process
worker merges a variable named `env` (or `env.X`) into the job's environment whenever the
template's `env` is an object, referenced or not. Our warm worker (the default) drops
`command`, `env` and `working_dir` from the variables before building a job
(`warm_worker.WarmProcessJobConfiguration`), so nothing a deployment stores reaches what it
executes. Prefect's stock process worker (WORKER_TYPE=process) has no such step: there, a
deployment PATCHed with an `env` can still set its runs' environment, and only Prefect's API
auth (PREFECT_SERVER_API_AUTH_STRING) keeps that to those allowed to write deployments.
"""

from __future__ import annotations

import copy
from typing import Any, get_args

from prefect.workers.process import ProcessWorker

from deployments.spec import Backoff, SpecSettings
from flows.run_controls import BACKOFF_ENV, DEFAULTS, MAX_DELAY_ENV, TIMEOUT_ENV

RETRIES = "retries"
RETRY_DELAY = "retry_delay_seconds"
# The spec's run controls its flows apply (flows/run_controls.py), each a variable reaching
# the run as an environment variable; 0 is "none" (Prefect's templates have no null).
TIMEOUT = "timeout_seconds"
BACKOFF = "retry_backoff"
MAX_DELAY = "retry_max_delay_seconds"
RUN_ENV = {TIMEOUT: TIMEOUT_ENV, BACKOFF: BACKOFF_ENV, MAX_DELAY: MAX_DELAY_ENV}
# The controls our warm worker applies before it starts a run (deployments/controls.py):
# windows, catch-up, jitter and limits, as one object variable.
CONTROLS = "controls"
# Prefect reads flow-level retry defaults from these when the flow decorator sets none.
RETRIES_ENV = "PREFECT_FLOWS_DEFAULT_RETRIES"
RETRY_DELAY_ENV = "PREFECT_FLOWS_DEFAULT_RETRY_DELAY_SECONDS"
# Every run's process sends Prefect a heartbeat this often (Prefect's minimum; its default is
# 180 s): `automations.py` marks a run Crashed when they stop.
HEARTBEAT_ENV = "PREFECT_FLOWS_HEARTBEAT_FREQUENCY"
HEARTBEAT_SECONDS = 30
# Prefect's own variables a run may still set: nothing in them changes what is executed.
HARMLESS = ("name", "labels", "stream_output")
# What decides what a worker executes: never taken from a deployment's or a run's variables.
LOCKED = ("command", "env", "working_dir")


def _bounds(field: str) -> dict[str, Any]:
    """A spec field's integer bounds and default, as JSON schema (one place for the rule)."""
    info = SpecSettings.model_fields[field]
    schema: dict[str, Any] = {"type": "integer", "default": info.default or 0}
    for rule in info.metadata:
        if (ge := getattr(rule, "ge", None)) is not None:
            schema["minimum"] = ge
        if (le := getattr(rule, "le", None)) is not None:
            schema["maximum"] = le
    return schema


def default_job_env() -> dict[str, str]:
    """The environment the template gives a run that sets no variable (the defaults)."""
    return {
        RETRIES_ENV: str(_bounds(RETRIES)["default"]),
        RETRY_DELAY_ENV: str(_bounds(RETRY_DELAY)["default"]),
        HEARTBEAT_ENV: str(HEARTBEAT_SECONDS),
        **DEFAULTS,
    }


def locked_job_template(command: str | None, *, gated: bool = False) -> dict[str, Any]:
    """The base job template for a pool whose runs execute `command` and nothing else.

    `command` None is the process worker's own choice (`python -m prefect.engine`). A
    `gated` template (our warm worker's) also hands the run's `controls` to the worker.
    """
    stock = copy.deepcopy(ProcessWorker.get_default_base_job_template())
    properties = stock["variables"]["properties"]
    variables = {
        "type": "object",
        "properties": {
            **{name: properties[name] for name in HARMLESS},
            RETRIES: {
                "title": "Flow retries",
                "description": "Times a failed run is retried (the flow's default).",
                **_bounds(RETRIES),
            },
            RETRY_DELAY: {
                "title": "Seconds between flow retries",
                **_bounds(RETRY_DELAY),
            },
            BACKOFF: {
                "title": "Flow retry backoff",
                "description": "exponential: each retry waits twice the one before",
                "type": "string",
                "enum": list(get_args(Backoff)),
                "default": "fixed",
            },
            MAX_DELAY: {
                "title": "Longest wait between flow retries (0: no cap)",
                **_bounds(MAX_DELAY),
            },
            TIMEOUT: {
                "title": "Run timeout in seconds (0: none)",
                **{**_bounds(TIMEOUT), "minimum": 0},
            },
            CONTROLS: {
                "title": "Scheduling controls",
                "description": "Windows, catch-up, jitter and limits, applied by the warm worker "
                "before a run starts (set through the schedule spec).",
                "type": "object",
                "default": {},
            },
        },
        "additionalProperties": False,
    }
    job_configuration: dict[str, Any] = {
        **{name: f"{{{{ {name} }}}}" for name in HARMLESS},
        "command": command,
        "env": {
            RETRIES_ENV: f"{{{{ {RETRIES} }}}}",
            RETRY_DELAY_ENV: f"{{{{ {RETRY_DELAY} }}}}",
            **{env: f"{{{{ {name} }}}}" for name, env in RUN_ENV.items()},
            HEARTBEAT_ENV: str(HEARTBEAT_SECONDS),
        },
    }
    if gated:
        job_configuration[CONTROLS] = f"{{{{ {CONTROLS} }}}}"
    return {"job_configuration": job_configuration, "variables": variables}


def spec_variables(spec: SpecSettings) -> dict[str, Any]:
    """The job variables that give a deployment's runs the spec's retries and run controls."""
    return {
        RETRIES: spec.retries,
        RETRY_DELAY: spec.retry_delay_seconds,
        BACKOFF: spec.retry_backoff,
        MAX_DELAY: spec.retry_max_delay_seconds or 0,
        TIMEOUT: spec.timeout_seconds or 0,
        CONTROLS: gate_controls(spec),
    }


# The spec fields kept in the `controls` variable.
STORED_CONTROLS = {
    "windows",
    "catchup",
    "jitter_seconds",
    "limits",
    "rate_limit",
    "depends_on",
    "alerts",
}


def gate_controls(spec: SpecSettings) -> dict[str, Any]:
    """The spec's STORED_CONTROLS as the `controls` variable (defaults left out; the worker
    reads neither dependencies nor alerts, views read everything back)."""
    controls = spec.model_dump(
        mode="json",
        include=STORED_CONTROLS,
        exclude_defaults=True,
    )
    return {k: v for k, v in controls.items() if v is not None}


def spec_settings_of(job_variables: dict[str, Any] | None) -> dict[str, Any]:
    """The spec fields a deployment's job variables hold (what `spec_variables` wrote)."""
    variables = job_variables or {}
    retries, delay = retries_of(variables)
    found = variables.get(CONTROLS)
    controls: dict[str, Any] = found if isinstance(found, dict) else {}
    return {
        RETRIES: retries,
        RETRY_DELAY: delay,
        BACKOFF: variables.get(BACKOFF, "fixed"),
        MAX_DELAY: variables.get(MAX_DELAY) or None,
        TIMEOUT: variables.get(TIMEOUT) or None,
        **controls,
    }


def retries_of(job_variables: dict[str, Any] | None) -> tuple[int, int]:
    """A deployment's flow retries and their delay, from its job variables.

    Deployments made before the template was locked carried them in `env`; those are read
    too (and rewritten by `work_pool.ensure_work_pool`).
    """
    variables = job_variables or {}
    found = variables.get("env")
    env: dict[str, Any] = found if isinstance(found, dict) else {}
    defaults = default_job_env()
    retries = variables.get(RETRIES, env.get(RETRIES_ENV, defaults[RETRIES_ENV]))
    delay = variables.get(RETRY_DELAY, env.get(RETRY_DELAY_ENV, defaults[RETRY_DELAY_ENV]))
    return int(retries), int(delay)


def locked_job_variables(job_variables: dict[str, Any] | None) -> dict[str, Any] | None:
    """Job variables made before the lock, in the template's terms; None if already fine.

    Retries move out of `env`; every other variable the template no longer has is dropped.
    """
    variables = job_variables or {}
    allowed = {*HARMLESS, RETRIES, RETRY_DELAY, *RUN_ENV, CONTROLS}
    if set(variables) <= allowed:
        return None
    retries, delay = retries_of(variables)
    kept = {k: v for k, v in variables.items() if k in allowed}
    return {**kept, RETRIES: retries, RETRY_DELAY: delay}
