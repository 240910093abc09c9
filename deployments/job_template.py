"""The job template of our work pool: what a run may choose, and what it may not.

Prefect's process worker template makes every field of a run's job a variable, `command`,
`env` and `working_dir` included, and any deployment or flow run may set its variables
(`job_variables`): anyone who can create a flow run could make the worker execute a command
of their choosing (`{"job_variables": {"command": "touch /tmp/x"}}`), or the same through
`env` (`PYTHONPATH`, `LD_PRELOAD`) or `working_dir`. Our template fixes those three; the only
variables are the harmless ones Prefect's has (`name`, `labels`, `stream_output`) and a run's
flow retries, and Prefect's server refuses any other variable (422, `additionalProperties`),
when it creates a run. Retries reach the run as the settings Prefect's flow decorator reads
its defaults from.

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
from typing import Any

from prefect.workers.process import ProcessWorker

from deployments.spec import SpecSettings

RETRIES = "retries"
RETRY_DELAY = "retry_delay_seconds"
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
    schema: dict[str, Any] = {"type": "integer", "default": info.default}
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
    }


def locked_job_template(command: str | None) -> dict[str, Any]:
    """The base job template for a pool whose runs execute `command` and nothing else.

    `command` None is the process worker's own choice (`python -m prefect.engine`).
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
        },
        "additionalProperties": False,
    }
    job_configuration: dict[str, Any] = {
        **{name: f"{{{{ {name} }}}}" for name in HARMLESS},
        "command": command,
        "env": {
            RETRIES_ENV: f"{{{{ {RETRIES} }}}}",
            RETRY_DELAY_ENV: f"{{{{ {RETRY_DELAY} }}}}",
            HEARTBEAT_ENV: str(HEARTBEAT_SECONDS),
        },
    }
    return {"job_configuration": job_configuration, "variables": variables}


def retry_variables(spec: SpecSettings) -> dict[str, int]:
    """The job variables that give a deployment's runs the spec's flow retries."""
    return {RETRIES: spec.retries, RETRY_DELAY: spec.retry_delay_seconds}


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
    allowed = {*HARMLESS, RETRIES, RETRY_DELAY}
    if set(variables) <= allowed:
        return None
    retries, delay = retries_of(variables)
    kept = {k: v for k, v in variables.items() if k in allowed}
    return {**kept, RETRIES: retries, RETRY_DELAY: delay}
