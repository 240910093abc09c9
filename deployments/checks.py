"""Creation-time checks that need I/O: does the table exist, does the Secret block exist."""

from __future__ import annotations

from typing import Any, cast

import anyio
import sqlalchemy as sa
from prefect import get_client
from prefect.exceptions import ObjectNotFound
from sqlalchemy.engine import Engine

from db.engine import get_engine
from flows.api_call_params import ApiCallParameters
from flows.crew_params import CrewParameters
from flows.service_job_params import ServiceJobParameters, resolve_service_url
from settings import get_settings

FieldErrors = list[dict[str, Any]]
# Our own bookkeeping tables: never a destination.
INTERNAL_TABLES = {"run_outcomes", "alembic_version"}


def error(loc: tuple[str, ...], msg: str) -> dict[str, Any]:
    return {"loc": ["parameters", *loc], "msg": msg, "type": "value_error"}


def _unique_column_sets(inspector: sa.Inspector, table: str) -> list[set[str]]:
    pk = inspector.get_pk_constraint(table).get("constrained_columns") or []
    sets = [set(pk)] if pk else []
    sets += [set(u["column_names"]) for u in inspector.get_unique_constraints(table)]
    sets += [set(i["column_names"]) for i in inspector.get_indexes(table) if i.get("unique")]  # type: ignore[arg-type]
    return sets


def table_errors(engine: Engine, params: ApiCallParameters) -> FieldErrors:
    """The destination table exists and has every extracted field and key column."""
    dest = params.destination
    with engine.connect() as conn:
        inspector = sa.inspect(conn)
        if not inspector.has_table(dest.table):
            where = f"database of block {dest.block!r}" if dest.block else "our database"
            return [
                error(("destination", "table"), f"table {dest.table!r} does not exist in {where}")
            ]
        if dest.is_api_records:
            return []
        if dest.block is None and dest.table in INTERNAL_TABLES:
            return [
                error(("destination", "table"), f"{dest.table!r} is internal, not a destination")
            ]
        columns = {c["name"] for c in inspector.get_columns(dest.table)}
        errors: FieldErrors = []
        if not params.extract.fields:
            errors.append(
                error(("extract", "fields"), f"map the columns of {dest.table!r} to expressions")
            )
        missing = sorted(set(params.extract.fields) - columns)
        if missing:
            errors.append(
                error(("extract", "fields"), f"columns not in {dest.table!r}: {', '.join(missing)}")
            )
        if dest.key_columns:
            if not_mapped := sorted(set(dest.key_columns) - set(params.extract.fields)):
                errors.append(
                    error(
                        ("destination", "key_columns"),
                        f"not among extract.fields: {', '.join(not_mapped)}",
                    )
                )
            elif set(dest.key_columns) not in _unique_column_sets(inspector, dest.table):
                errors.append(
                    error(
                        ("destination", "key_columns"),
                        f"{dest.table!r} has no unique key on exactly these columns",
                    )
                )
        return errors


async def check_destination(params: ApiCallParameters) -> FieldErrors:
    """The destination's database is reachable and its table fits the extracted fields."""
    engine = get_engine()
    if params.destination.block is not None:
        from blocks.destination import Destination

        try:
            block = cast(Destination, await Destination.aload(params.destination.block))
            engine = block.engine()
        except (ValueError, ObjectNotFound):
            return [
                error(
                    ("destination", "block"),
                    f"no Destination block named {params.destination.block!r}",
                )
            ]
    try:
        return await anyio.to_thread.run_sync(table_errors, engine, params)
    except sa.exc.SQLAlchemyError as exc:
        return [
            error(("destination",), f"cannot read the destination database: {type(exc).__name__}")
        ]


async def check_secret_headers(params: ApiCallParameters) -> FieldErrors:
    """The Secret block named for credential headers exists."""
    name = params.source.headers_secret
    if name is None:
        return []
    async with get_client() as client:
        try:
            await client.read_block_document_by_name(name, block_type_slug="secret")
        except ObjectNotFound:
            return [error(("source", "headers_secret"), f"no Secret block named {name!r}")]
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
    from blocks.crew import CrewApi, UserSource
    from db.crew import user_source_table

    errors: FieldErrors = []
    if params.crew_api is not None:
        try:
            await CrewApi.aload(params.crew_api)
        except (ValueError, ObjectNotFound):
            errors.append(error(("crew_api",), f"no CrewApi block named {params.crew_api!r}"))
    elif not get_settings().crew_api_url:
        errors.append(error(("crew_api",), "name a CrewApi block or set CREW_API_URL"))
    if params.users is not None:
        try:
            block = cast(UserSource, await UserSource.aload(params.users))
        except (ValueError, ObjectNotFound):
            return [*errors, error(("users",), f"no UserSource block named {params.users!r}")]

        def read() -> None:
            with block.engine().connect() as conn:
                user_source_table(conn, block.table)

        try:
            await anyio.to_thread.run_sync(read)
        except (LookupError, sa.exc.SQLAlchemyError) as exc:
            errors.append(error(("users",), f"cannot read users of block {params.users!r}: {exc}"))
    return errors
