"""The api_call pipeline: call an HTTP API, extract records with JMESPath, store them."""

from __future__ import annotations

import logging
import time
import uuid
from datetime import datetime
from typing import Any

import httpx
from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff
from sqlalchemy.engine import Engine

from blocks.destination import resolve_destination_engine
from blocks.http import tls_context
from blocks.secret_headers import load_secret_headers
from db.crud import reflect_table, upsert_api_records, upsert_rows
from db.engine import get_engine
from db.models import utcnow
from flows.api_call_params import ApiRequest, ApiSource, DestinationSpec, ExtractSpec
from flows.common import (
    artifact_key,
    publish_table,
    recorded_run,
    scheduled_start_time,
    storage_errors,
    unwalked,
)
from flows.extraction import Extracted, Extractor, extract_records
from flows.http import raise_for_status, retry_on_transient
from flows.narration import count, exchange_line, run_logger
from flows.run_controls import flow_options

ARTIFACT_ROWS = 50


@task(cache_policy=NO_CACHE, retry_condition_fn=retry_on_transient, retry_jitter_factor=0.5)
async def call_api(client: httpx.AsyncClient, request: ApiRequest) -> Any:
    """Send the configured request once and return the decoded JSON body."""
    started = time.perf_counter()
    response = await client.request(
        request.method,
        request.path,
        params=request.query,
        headers=request.headers,
        json=request.body,
        timeout=request.timeout_seconds,
    )
    line = exchange_line(response, time.perf_counter() - started)
    run_logger().log(logging.INFO if response.is_success else logging.WARNING, line)
    raise_for_status(response)
    try:
        return response.json()
    except ValueError:
        raise ValueError(
            f"response from {request.method} {response.request.url} is not JSON "
            f"(content-type {response.headers.get('content-type', 'unknown')})"
        ) from None


@task(name="extract", cache_policy=NO_CACHE)
def extract_items(document: Any, spec: ExtractSpec) -> Extracted:
    """Select the items of the response and project each onto the configured fields."""
    extracted = extract_records(document, Extractor.compile(spec.root, spec.fields, spec.key))
    run_logger().info(
        "extracted %s with %s, %s",
        count(len(extracted.records), "record"),
        f"`{spec.root}`" if spec.root else "the whole response",
        f"{len(extracted.failures):,} unreadable" if extracted.failures else "none unreadable",
    )
    return extracted


@task(cache_policy=NO_CACHE)
def store_records(
    engine: Engine,
    extracted: Extracted,
    destination: DestinationSpec,
    schedule: str,
    flow_run_id: uuid.UUID,
) -> int:
    """Upsert the records in one transaction; a retried store updates, never duplicates."""
    with storage_errors(), engine.begin() as conn:
        if destination.is_api_records:
            rows = api_record_rows(
                extracted, schedule=schedule, flow_run_id=flow_run_id, fetched_at=utcnow()
            )
            stored = upsert_api_records(conn, rows)
        else:
            table = reflect_table(conn, destination.table)
            if table is None:
                raise LookupError(f"destination table {destination.table!r} does not exist")
            stored = upsert_rows(
                conn, table, [data for _, data in extracted.records], destination.key_columns
            )
    run_logger().info(
        "stored %s in `%s` (inserted or updated)", count(stored, "row"), destination.table
    )
    return stored


@flow(name="api-call", **flow_options())
async def api_call(
    source: ApiSource,
    request: ApiRequest | None = None,
    extract: ExtractSpec | None = None,
    destination: DestinationSpec | None = None,
) -> dict[str, int]:
    """Call an HTTP API, extract records with JMESPath and upsert them into a table."""
    request, extract = request or ApiRequest(), extract or ExtractSpec()
    destination = destination or DestinationSpec()
    with recorded_run(get_engine(), "api_call") as outcome:
        headers = {**source.headers, **await load_secret_headers(source.headers_secret)}
        async with httpx.AsyncClient(
            base_url=source.base_url, headers=headers, verify=tls_context()
        ) as client:
            fetch = call_api.with_options(
                retries=request.retries,
                retry_delay_seconds=exponential_backoff(request.backoff_seconds)(request.retries),
            )
            document = await fetch(client, request)
        extracted = extract_items(unwalked(document), extract)
        target = await resolve_destination_engine(destination.block)
        stored = store_records(
            target, unwalked(extracted), destination, outcome.schedule, outcome.flow_run_id
        )
        outcome.items_processed = len(extracted.records) + len(extracted.failures)
        outcome.items_succeeded, outcome.items_failed = stored, len(extracted.failures)
        outcome.meta = {
            "table": destination.table,
            "failures": extracted.failures[:100],
            "scheduled_for": scheduled_start_time(),
        }
        await publish_records(outcome.schedule, extracted, stored, destination.table)
    return {"processed": outcome.items_processed, "stored": stored, "failed": outcome.items_failed}


def api_record_rows(
    extracted: Extracted, *, schedule: str, flow_run_id: uuid.UUID, fetched_at: datetime
) -> list[dict[str, Any]]:
    """Rows for `api_records`; without a key expression each run appends its own records."""
    return [
        {
            "schedule": schedule,
            "key": key if key is not None else f"{flow_run_id}:{index}",
            "flow_run_id": flow_run_id,
            "data": data,
            "fetched_at": fetched_at,
        }
        for index, (key, data) in enumerate(extracted.records)
    ]


async def publish_records(schedule: str, extracted: Extracted, stored: int, table: str) -> None:
    """The first records as a table artifact on the run's page (none when nothing came)."""
    if not extracted.records:
        return
    await publish_table(
        artifact_key("api-call", schedule),
        [{"key": k, **d} for k, d in extracted.records[:ARTIFACT_ROWS]],
        f"{stored} records stored in `{table}` ({len(extracted.failures)} failed); "
        f"first {ARTIFACT_ROWS} shown.",
    )
