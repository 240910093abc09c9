"""The one place the environment is read: every knob of scheduled-pipelines lives here."""

from __future__ import annotations

import json
import os
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_DIR = Path(__file__).resolve().parent
DATA_DIR = PROJECT_DIR / ".data"

_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def normalise_database_url(url: str) -> str:
    """Point bare PostgreSQL URLs at the psycopg 3 driver (Heroku-style `postgres://` too)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def parse_workspace_keys(raw: str) -> dict[str, frozenset[str]]:
    """WORKSPACE_KEYS' JSON object of key -> workspace ids; ValueError (never showing a key)
    when it is not one."""
    try:
        parsed = json.loads(raw)
    except ValueError:
        raise ValueError("WORKSPACE_KEYS is not JSON") from None
    if not isinstance(parsed, dict) or not all(
        isinstance(k, str)
        and k.strip()
        and isinstance(v, list)
        and all(isinstance(w, str) and w for w in v)
        for k, v in parsed.items()
    ):
        raise ValueError('WORKSPACE_KEYS must be {"<key>": ["<workspace id>", ...], ...}')
    return {k.strip(): frozenset(v) for k, v in parsed.items()}


class Settings(BaseSettings):
    """Configuration from the environment (or a `.env` file beside the project)."""

    model_config = SettingsConfigDict(
        env_file=PROJECT_DIR / ".env", env_ignore_empty=True, extra="ignore"
    )

    # Where `make run` keeps Prefect's state and the logs.
    data_dir: Path = DATA_DIR
    database_url: str = f"sqlite:///{DATA_DIR / 'pipelines.db'}"
    prefect_port: int = 4200
    # Where `make run`'s Prefect server listens; off loopback it needs Prefect's basic auth,
    # PREFECT_SERVER_API_AUTH_STRING (`user:password`), which every process of the stack then
    # uses as its client's PREFECT_API_AUTH_STRING (deployments/stack.py).
    prefect_host: str = "127.0.0.1"
    prefect_server_api_auth_string: SecretStr | None = Field(
        default=None, validation_alias="PREFECT_SERVER_API_AUTH_STRING"
    )

    api_host: str = "127.0.0.1"
    api_port: int = 8000
    # Comma-separated bearer keys; empty means no auth, which is only allowed on loopback.
    api_keys: SecretStr | None = None
    # Where flows (the demo endpoint of the example deployment) and Prefect's catch-up
    # automations (deployments/catchup.py) reach our own API.
    public_api_url: str = "http://127.0.0.1:8000"

    work_pool_name: str = "pipelines"
    # The worker our pool is for: `warm-process` (deployments/warm_worker.py: each run a fork
    # of a warm parent, started in milliseconds) or Prefect's stock `process` worker (each run
    # a new interpreter importing Prefect, ~2 s of CPU).
    worker_type: Literal["warm-process", "process"] = "warm-process"
    # Flow runs at once (the pool's concurrency limit); default by worker type: a warm run is a
    # fork of ~26 MB of its own, mostly waiting on I/O (128: a burst of 100 due at once starts
    # together, beside the minute's other runs), a stock one a ~85 MB interpreter costing ~2 s
    # of CPU to start (4).
    work_pool_concurrency: int | None = Field(default=None, ge=1)
    # How far ahead the worker claims due runs and starts their processes, which then wait
    # for their time (Prefect's PREFECT_WORKER_PREFETCH_SECONDS); default by worker type: 60 s
    # warm (time to have 100 runs started on 2 cores), 20 s stock.
    worker_prefetch_seconds: int | None = Field(default=None, ge=0)
    # What the stock process worker runs for each flow run: the engine directly, one process
    # per run (see deployments.work_pool.process_job_template). `python` is the worker's own
    # (deployments.stack.worker_env puts its folder first on PATH).
    flow_run_command: str = "python -m prefect.engine"

    # Service jobs: `<NAME>_SERVICE_URL` names the base URL of service `<name>-service`
    # (EMAIL_SERVICE_URL -> email-service); SERVICE_URLS='{"name": "url"}' adds or overrides.
    service_urls: dict[str, str] = Field(default_factory=dict)
    # Comma-separated URL prefixes; when set, a job whose endpoint URL is outside is refused.
    service_allowlist: str | None = None

    # The crew pipeline: the run-crew URL used when no CrewApi block is named, the
    # deployment /api/scheduler acts on, and its interval until `start` sets one.
    crew_api_url: str | None = None
    crew_schedule_name: str = "crew-scheduler"
    crew_scheduler_interval_minutes: int = Field(default=60, ge=1)

    # The newsletter pipeline: where Reddit's public JSON listings are read (tests point it
    # at a local fake), and the SMTP server issues go through when a job names no SmtpServer
    # block (SMTP_SECURITY: none | starttls | ssl), over this many reused connections.
    reddit_base_url: str = "https://www.reddit.com"
    smtp_host: str | None = None
    smtp_port: int = Field(default=587, ge=1, le=65535)
    smtp_username: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str | None = None
    smtp_security: Literal["none", "starttls", "ssl"] = "starttls"
    smtp_connections: int = Field(default=4, ge=1, le=50)
    # Keys bound to workspaces, as JSON: WORKSPACE_KEYS='{"<key>": ["<workspace id>", ...]}'.
    # Such a key reaches only the newsletter routes, and only its workspaces there; the
    # API_KEYS are admin keys (every route, every workspace).
    workspace_keys: SecretStr | None = None

    # A request of our API not answered within this gets 503 + Retry-After (api/deadline.py).
    request_deadline_seconds: float = Field(default=30.0, gt=0)
    # The /demo routes (a price feed and crew API for the offline example); `make run` turns
    # them on, a production API leaves them off.
    demo_routes: bool = False

    # Ceiling for one page of a list route.
    max_page_size: int = Field(default=500, ge=1)
    # Slots of a global limit a schedule names (spec `limits`) when it is created for it.
    default_limit_size: int = Field(default=1, ge=1)
    # A run is stuck (alerts `stuck`) past this when its schedule has no timeout and too few
    # completed runs for a median.
    alert_stuck_after_seconds: int = Field(default=3600, ge=10)
    # Most runs one backfill may create (POST /api/schedules/{name}/backfill); more: 422.
    max_backfill_runs: int = Field(default=1000, ge=1, le=100_000)

    @field_validator("database_url")
    @classmethod
    def _normalise_url(cls, value: str) -> str:
        return normalise_database_url(value)

    @field_validator("workspace_keys")
    @classmethod
    def _workspace_keys_shape(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None:
            parse_workspace_keys(value.get_secret_value())
        return value

    @model_validator(mode="after")
    def _refuse_open_doors(self) -> Settings:
        """Nothing of ours listens off loopback without its credentials."""
        doors = [
            (
                self.api_host,
                bool(self.api_key_list or self.workspace_key_map),
                "API_KEYS",
                "API_HOST",
                "",
            ),
            (
                self.prefect_host,
                bool(self.prefect_server_api_auth_string),
                "PREFECT_SERVER_API_AUTH_STRING",
                "PREFECT_HOST",
                ": anyone who reaches Prefect's API can create and change deployments",
            ),
        ]
        for host, locked, credential, where, why in doors:
            if host not in _LOOPBACK_HOSTS and not locked:
                raise ValueError(
                    f"{credential} must be set to listen on a non-loopback address "
                    f"({where}={host}){why}"
                )
        return self

    @model_validator(mode="after")
    def _service_urls_from_env(self) -> Settings:
        # The service-job registry's convention: one `<NAME>_SERVICE_URL` variable per service.
        found = {
            name[: -len("_SERVICE_URL")].lower().replace("_", "-") + "-service": url
            for name, url in os.environ.items()
            if name.endswith("_SERVICE_URL") and name != "_SERVICE_URL" and url
        }
        self.service_urls = {**found, **self.service_urls}
        return self

    @property
    def pool_concurrency(self) -> int:
        """The pool's concurrency limit: WORK_POOL_CONCURRENCY, else the worker type's default."""
        if self.work_pool_concurrency is not None:
            return self.work_pool_concurrency
        return 128 if self.worker_type == "warm-process" else 4

    @property
    def prefetch_seconds(self) -> int:
        """How far ahead the worker claims runs: WORKER_PREFETCH_SECONDS, else by worker type."""
        if self.worker_prefetch_seconds is not None:
            return self.worker_prefetch_seconds
        return 60 if self.worker_type == "warm-process" else 20

    @property
    def service_allowed_prefixes(self) -> list[str]:
        if not self.service_allowlist:
            return []
        return [p.strip() for p in self.service_allowlist.split(",") if p.strip()]

    @cached_property
    def workspace_key_map(self) -> dict[str, frozenset[str]]:
        """WORKSPACE_KEYS: each key and the workspaces it reaches (parsed once; the Gate and
        the routes read it on every request)."""
        if self.workspace_keys is None:
            return {}
        return parse_workspace_keys(self.workspace_keys.get_secret_value())

    @property
    def api_key_list(self) -> list[str]:
        if self.api_keys is None:
            return []
        return [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
