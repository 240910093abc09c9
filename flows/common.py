"""What every pipeline does around its work: record the run's outcome, show results in the UI."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from prefect import task
from prefect.artifacts import acreate_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import deployment, flow_run
from prefect.utilities.annotations import quote
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError

from db.crud import save_run_outcome
from db.models import RunOutcomeBase, utcnow
from flows.http import describe_error

T = TypeVar("T")


class ReportedFailure(RuntimeError):
    """A failure whose message already says what went wrong, recorded as it is."""


def unwalked(value: T) -> T:
    """`value` for a task argument that Prefect passes as is, without walking it for futures.

    Prefect visits every element of a task's arguments; for a batch of thousands of items
    that walk costs more than the task's own work.
    """
    return cast(T, quote(value))


def current_flow_run_id() -> uuid.UUID:
    """The id of the running flow run (a fresh one outside Prefect, for plain calls)."""
    run_id = flow_run.get_id()
    return uuid.UUID(run_id) if run_id else uuid.uuid4()


def is_first_attempt() -> bool:
    """True unless Prefect is retrying this flow run (nothing of it can be stored yet)."""
    return int(flow_run.get_run_count() or 0) <= 1


def scheduled_start_time() -> str | None:
    """When this run was due (a backfilled run: the past time it stands for), ISO 8601."""
    when = flow_run.get_scheduled_start_time() if flow_run.get_id() else None
    return when.isoformat() if when else None


def current_schedule_name() -> str:
    """The schedule (deployment) this run belongs to; the flow run's name when run ad hoc."""
    return deployment.get_name() or flow_run.get_name() or "ad-hoc"


class StorageError(RuntimeError):
    """Our database failed; the message is the error alone, never the statement or its data."""


@contextmanager
def storage_errors() -> Iterator[None]:
    """Raise a database failure as a StorageError whose message has no record data.

    SQLAlchemy's messages carry the statement's parameters (the records being stored), and
    Prefect puts a failed task's or flow's exception message in its state, its logs and the
    UI; this is what they get instead (describe_error). The original is not chained.
    """
    try:
        yield
    except SQLAlchemyError as exc:
        raise StorageError(describe_error(exc)) from None


@task(cache_policy=NO_CACHE, retries=2, retry_delay_seconds=1)
def record_outcome(engine: Engine, outcome: RunOutcomeBase) -> None:
    """Write the run's item counts and error to run_outcomes (a retry overwrites, never adds)."""
    with storage_errors(), engine.begin() as conn:
        save_run_outcome(conn, outcome)


@contextmanager
def recorded_run(
    engine: Engine,
    pipeline: str,
    *,
    finish: Callable[[RunOutcomeBase], None] | None = None,
    **meta: Any,
) -> Iterator[RunOutcomeBase]:
    """The run's outcome, written to run_outcomes when the block ends, however it ends.

    The block fills in the counts as it goes; `finish`, if given, fills in the rest on the
    way out (also after a failure). An exception is recorded as the outcome's error (its
    message alone for a ReportedFailure, else its type and message) and raised again.
    """
    outcome = RunOutcomeBase(
        flow_run_id=current_flow_run_id(),
        schedule=current_schedule_name(),
        pipeline=pipeline,
        started_at=utcnow(),
        meta=meta,
    )
    try:
        yield outcome
    except Exception as exc:
        outcome.error = str(exc) if isinstance(exc, ReportedFailure) else describe_error(exc)
        raise
    finally:
        if finish is not None:
            finish(outcome)
        outcome.finished_at = utcnow()
        record_outcome(engine, outcome)


def artifact_key(prefix: str, schedule: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    cleaned = "".join(c if c.isalnum() else "-" for c in f"{prefix}-{schedule}".lower())
    return cleaned.strip("-")[:100]


async def publish_table(key: str, rows: list[dict[str, Any]], description: str) -> None:
    """Show rows as a table artifact on the flow run page in the Prefect UI.

    A plain call, not a task: it is one API call, and a task run would cost more than that.
    """
    await acreate_table_artifact(key=key, table=rows, description=description)
