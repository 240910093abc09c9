"""The service-job registry's contract: JobContext out, JobResult back, and the job's parameters."""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from pydantic import AliasGenerator, BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

Trigger = Literal["scheduler", "manual", "admin"]
_CAMEL = ConfigDict(
    alias_generator=AliasGenerator(validation_alias=to_camel, serialization_alias=to_camel),
    populate_by_name=True,
)


class JobContext(BaseModel):
    """What the service's job endpoint receives (camelCase on the wire)."""

    model_config = _CAMEL

    job_name: str
    config: dict[str, Any]
    execution_id: str
    triggered_by: Trigger
    triggered_by_user: str | None = None


class JobResult(BaseModel):
    """What the service answers; anything else is a malformed answer."""

    model_config = ConfigDict(**_CAMEL, extra="ignore")

    success: bool
    items_processed: int = Field(default=0, ge=0)
    items_succeeded: int = Field(default=0, ge=0)
    items_failed: int = Field(default=0, ge=0)
    error: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


# A job endpoint is a plain path: segments of RFC 3986 path characters without `%` (no encoded
# characters to decode differently later) and `@`, no `\`, query or fragment; no `.` or `..`
# segment, which an HTTP client resolves away (`/email/../admin` is `/admin`).
ENDPOINT_SEGMENT = re.compile(r"[A-Za-z0-9._~!$&'()*+,;=:-]+")


def check_endpoint(value: str) -> str:
    """A path on the service, as given; ValueError naming the first thing wrong with it."""
    if not value.startswith("/") or value.startswith("//"):
        raise ValueError("must be a path on the service, starting with a single '/'")
    segments = value[1:].removesuffix("/").split("/") if value != "/" else []
    for segment in segments:
        if not ENDPOINT_SEGMENT.fullmatch(segment):
            raise ValueError(
                "must be a plain path: letters, digits and - . _ ~ ! $ & ' ( ) * + , ; = : "
                "between single '/'; no '%', '@', '\\', '?', '#', spaces or empty segments"
            )
        if segment in {".", ".."}:
            raise ValueError("must not contain '.' or '..' segments")
    return value


def within_prefix(url: str, prefix: str) -> bool:
    """Whether `url` is `prefix` or below it: same scheme and host, and the path continues the
    prefix's at a segment boundary (`http://h/email` covers `/email/x`, not `/emailer`)."""
    target, allowed = urllib.parse.urlsplit(url), urllib.parse.urlsplit(prefix)
    if (target.scheme.lower(), target.netloc.lower()) != (
        allowed.scheme.lower(),
        allowed.netloc.lower(),
    ):
        return False
    base = allowed.path.rstrip("/")
    return target.path == base or target.path.startswith(base + "/")


def resolve_service_url(
    service_urls: Mapping[str, str], allowed_prefixes: Sequence[str], service: str, endpoint: str
) -> str:
    """The job endpoint's URL: the service's base URL (from settings) plus the endpoint path.

    Raises LookupError for an unknown service and PermissionError for a URL outside the
    allow-list, so callers can name the field at fault.
    """
    base = service_urls.get(service)
    if base is None:
        known = ", ".join(sorted(service_urls)) or "none configured"
        raise LookupError(
            f"unknown service {service!r}: set {service_env_var(service)} (known: {known})"
        )
    url = base.rstrip("/") + check_endpoint(endpoint)
    if allowed_prefixes and not any(within_prefix(url, prefix) for prefix in allowed_prefixes):
        raise PermissionError(f"{url} is outside the service allow-list")
    return url


def service_env_var(service: str) -> str:
    """The variable naming a service's URL, registry style: email-service -> EMAIL_SERVICE_URL."""
    return service.removesuffix("-service").upper().replace("-", "_") + "_SERVICE_URL"


class ServiceJobParameters(BaseModel):
    """A registered job: which service endpoint to POST a JobContext to, with what config."""

    model_config = ConfigDict(extra="forbid")

    job_name: str = Field(min_length=1)
    service: str = Field(min_length=1, examples=["email-service"])
    endpoint: str = Field(examples=["/api/jobs/weekly-digest"])
    config: dict[str, Any] = Field(default_factory=dict)
    display_name: str | None = None
    timeout_seconds: float = Field(default=300, gt=0, le=86_400)
    triggered_by: Trigger | None = Field(
        default=None, description="Set by our trigger route; absent for scheduled and UI runs"
    )
    triggered_by_user: str | None = None

    _endpoint = field_validator("endpoint")(classmethod(lambda cls, v: check_endpoint(v)))
