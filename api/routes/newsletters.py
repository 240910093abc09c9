"""The issues newsletter jobs produced, with their items and their ledger (who got each)."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.bounds import Offset, RowId
from api.deps import AccessDep, SessionDep
from api.envelope import Envelope, ListEnvelope
from db.newsletter import (
    delivery_counts,
    get_newsletter,
    list_deliveries,
    list_newsletters,
    newsletter_items,
)
from deployments.errors import ScheduleNotFound
from flows.newsletter_params import WorkspaceId

router = APIRouter(prefix="/api/newsletters", tags=["newsletter workspaces"])


class NewsletterSummary(BaseModel):
    id: int
    flow_run_id: uuid.UUID
    job_id: uuid.UUID | None
    job_name: str
    workspace_id: str
    subject: str
    items_used: int
    test_mode: bool
    created_at: datetime


class ItemPublic(BaseModel):
    position: int
    title: str
    url: str
    source: str
    source_label: str
    published_at: datetime | None
    summary: str
    author: str | None


class DeliveryPublic(BaseModel):
    id: int
    email: str
    subscriber_id: int | None
    status: str
    attempts: int
    smtp_code: int | None
    error: str | None
    sent_at: datetime | None


class NewsletterDetail(NewsletterSummary):
    html: str
    text: str
    items: list[ItemPublic]
    deliveries: list[DeliveryPublic]
    delivery_counts: dict[str, int]


@router.get("")
def read_newsletters(
    session: SessionDep,
    access: AccessDep,
    workspace_id: WorkspaceId | None = None,
    job_id: uuid.UUID | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    offset: Offset = 0,
) -> ListEnvelope[NewsletterSummary]:
    """Issues newest first, of one workspace (a workspace key: of its workspaces)."""
    if workspace_id is not None:
        access.require(workspace_id)
        workspaces: frozenset[str] | None = frozenset({workspace_id})
    else:
        workspaces = access.workspaces
    rows, total = list_newsletters(
        session, workspace_ids=workspaces, job_id=job_id, limit=limit, offset=offset
    )
    return ListEnvelope(
        data=[NewsletterSummary.model_validate(r.model_dump()) for r in rows], count=total
    )


@router.get("/{newsletter_id}")
def read_newsletter(
    newsletter_id: RowId,
    session: SessionDep,
    access: AccessDep,
    deliveries_limit: Annotated[int, Query(ge=0, le=10_000)] = 1000,
) -> Envelope[NewsletterDetail]:
    """One issue: its HTML and text, its items, and its deliveries (the first 1,000)."""
    row = get_newsletter(session, newsletter_id)
    if row is None or not access.sees(row.workspace_id):
        raise ScheduleNotFound(str(newsletter_id), "newsletter")
    deliveries = list_deliveries(session, newsletter_id, limit=deliveries_limit)
    counts = delivery_counts(session.connection(), newsletter_id)
    return Envelope(
        data=NewsletterDetail(
            **row.model_dump(),
            items=[
                ItemPublic.model_validate(i.model_dump())
                for i in newsletter_items(session, newsletter_id)
            ],
            deliveries=[DeliveryPublic.model_validate(d.model_dump()) for d in deliveries],
            delivery_counts=counts,
        )
    )
