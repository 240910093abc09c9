"""Creation-time checks that need I/O: the blocks named exist, the tables fit, the service is known.

Each check takes a pipeline's validated parameters and answers the bad fields (FastAPI's
shape, under `parameters`), so the schedule is refused with a 422 before Prefect sees it.
"""

from __future__ import annotations

from typing import Any

import anyio
import sqlalchemy as sa
from prefect import get_client
from prefect.exceptions import ObjectNotFound

from blocks.base import BlockNotFound
from blocks.chat_model import resolve_chat_model
from blocks.crew import resolve_crew_api, resolve_user_table
from blocks.destination import resolve_destination_engine
from blocks.secret_headers import shown_in_clear
from blocks.smtp import resolve_smtp
from db.schema import table_problems
from deployments.errors import FieldErrors, field_error
from flows.api_call_params import ApiCallParameters
from flows.crew_params import CrewParameters
from flows.newsletter_params import NewsletterParameters
from flows.service_job_params import ServiceJobParameters, resolve_service_url
from settings import get_settings

# Where each part of a destination problem stands in the api_call parameters.
_DESTINATION_LOC = {
    "table": ("destination", "table"),
    "fields": ("extract", "fields"),
    "key_columns": ("destination", "key_columns"),
}


def error(loc: tuple[str, ...], msg: str) -> dict[str, Any]:
    """A bad field of the schedule's parameters."""
    return field_error(("parameters", *loc), msg)


async def check_destination(params: ApiCallParameters) -> FieldErrors:
    """The destination's database is reachable and its table fits the extracted fields."""
    dest = params.destination
    try:
        engine = await resolve_destination_engine(dest.block)
    except BlockNotFound as exc:
        return [error(("destination", "block"), str(exc))]

    def inspect() -> FieldErrors:
        with engine.connect() as conn:
            problems = table_problems(
                conn,
                dest.table,
                None if dest.is_api_records else list(params.extract.fields),
                dest.key_columns,
                ours=dest.block is None,
                where=f"database of block {dest.block!r}" if dest.block else "our database",
            )
        return [error(_DESTINATION_LOC[p.part], p.message) for p in problems]

    try:
        return await anyio.to_thread.run_sync(inspect)
    except sa.exc.SQLAlchemyError as exc:
        return [
            error(("destination",), f"cannot read the destination database: {type(exc).__name__}")
        ]


async def check_secret_headers(params: ApiCallParameters) -> FieldErrors:
    """The Secret block named for credential headers exists and Prefect masks its value.

    Read as Prefect's API shows it to anyone (secrets masked), its value is never seen here: a
    string comes back masked, a JSON object in clear, which is refused.
    """
    name = params.source.headers_secret
    if name is None:
        return []
    async with get_client() as client:
        try:
            document = await client.read_block_document_by_name(
                name, block_type_slug="secret", include_secrets=False
            )
        except ObjectNotFound:
            return [error(("source", "headers_secret"), f"no Secret block named {name!r}")]
    if not isinstance(document.data.get("value"), str):
        return [error(("source", "headers_secret"), shown_in_clear(name))]
    return []


async def check_service(params: ServiceJobParameters) -> FieldErrors:
    """The service is configured, and its endpoint URL is inside the allow-list if one is set."""
    settings = get_settings()
    try:
        resolve_service_url(
            settings.service_urls,
            settings.service_allowed_prefixes,
            params.service,
            params.endpoint,
        )
    except LookupError as exc:
        return [error(("service",), str(exc))]
    except PermissionError as exc:
        return [error(("endpoint",), str(exc))]
    return []


async def check_crew(params: CrewParameters) -> FieldErrors:
    """The crew API is known (block or CREW_API_URL) and the users table is readable."""
    errors: FieldErrors = []
    try:
        await resolve_crew_api(params.crew_api)
    except LookupError as exc:
        errors.append(error(("crew_api",), str(exc)))
    try:
        await resolve_user_table(params.users)
    except BlockNotFound as exc:
        errors.append(error(("users",), str(exc)))
    except (LookupError, sa.exc.SQLAlchemyError) as exc:
        errors.append(error(("users",), f"cannot read users of block {params.users!r}: {exc}"))
    return errors


async def check_newsletter(params: NewsletterParameters) -> FieldErrors:
    """The blocks the job names exist, and it has an SMTP server when it sends for real."""
    config = params.config
    errors: FieldErrors = []
    if config.chat_model is not None:
        try:
            await resolve_chat_model(config.chat_model)
        except BlockNotFound as exc:
            errors.append(error(("config", "chat_model"), str(exc)))
    sends = "send" in params.actions and (not config.test_mode or config.test_recipients)
    if sends or config.smtp_server is not None:
        try:
            await resolve_smtp(config.smtp_server)
        except LookupError as exc:
            errors.append(error(("config", "smtp_server"), str(exc)))
    if config.rate_limit is not None:
        errors += await _check_rate_limit(config.rate_limit)
    return errors


async def _check_rate_limit(name: str) -> FieldErrors:
    """`name` is a Prefect global concurrency limit with slot decay (what rate_limit needs)."""
    async with get_client() as client:
        try:
            limit = await client.read_global_concurrency_limit_by_name(name)
        except ObjectNotFound:
            return [
                error(("config", "rate_limit"), f"no Prefect global concurrency limit {name!r}")
            ]
    if not limit.slot_decay_per_second:
        message = f"global concurrency limit {name!r} has no slot decay: it is not a rate limit"
        return [error(("config", "rate_limit"), message)]
    return []
