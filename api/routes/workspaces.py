"""A workspace's content sources and subscribers (what newsletter jobs scrape and mail), and
the one-click unsubscribe link each e-mail carries."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Path, Query, status
from fastapi.responses import HTMLResponse
from pydantic import BaseModel, EmailStr, Field
from sqlalchemy.engine import Engine

from api.bounds import Offset
from api.deps import AccessDep, EngineDep, SessionDep
from api.envelope import Envelope, ListEnvelope
from db.newsletter import (
    list_sources,
    list_subscribers,
    replace_sources,
    unsubscribe,
    upsert_subscribers,
)
from flows.newsletter_params import WorkspaceId
from flows.newsletter_sources import SourceSpec

router = APIRouter(prefix="/api/v1/workspaces/{workspace_id}", tags=["newsletter workspaces"])
unsubscribe_router = APIRouter(prefix="/api/v1/unsubscribe", tags=["newsletter workspaces"])
WorkspacePath = Annotated[WorkspaceId, Path()]
SubscriberStatus = Literal["active", "unsubscribed"]


class SourceList(BaseModel):
    """The workspace's whole source list (PUT replaces it)."""

    sources: list[SourceSpec] = Field(max_length=200)


class SubscriberIn(BaseModel):
    email: EmailStr
    name: str | None = Field(default=None, max_length=200)
    status: SubscriberStatus = "active"


class SubscriberUpsert(BaseModel):
    """Subscribers to create or update, by address (at most 10,000 a request)."""

    subscribers: list[SubscriberIn] = Field(max_length=10_000)


class SubscriberPublic(BaseModel):
    id: int
    email: str
    name: str | None
    status: str
    created_at: datetime
    updated_at: datetime


@router.put("/sources")
def put_sources(
    workspace_id: WorkspacePath, body: SourceList, engine: EngineDep, access: AccessDep
) -> Envelope[list[SourceSpec]]:
    """Replace the workspace's content sources (RSS/Atom feeds, subreddits, HTML pages)."""
    access.require(workspace_id)
    with engine.begin() as conn:
        replace_sources(conn, workspace_id, [s.model_dump(mode="json") for s in body.sources])
    return Envelope(message=f"{len(body.sources)} sources saved", data=body.sources)


@router.get("/sources")
def get_sources(
    workspace_id: WorkspacePath, session: SessionDep, access: AccessDep
) -> Envelope[list[dict[str, object]]]:
    """The workspace's content sources, in order."""
    access.require(workspace_id)
    return Envelope(data=list_sources(session, workspace_id))


@router.put("/subscribers")
def put_subscribers(
    workspace_id: WorkspacePath, body: SubscriberUpsert, engine: EngineDep, access: AccessDep
) -> Envelope[dict[str, int]]:
    """Create or update subscribers by address (name, status); addresses are lower-cased."""
    access.require(workspace_id)
    with engine.begin() as conn:
        written = upsert_subscribers(
            conn, workspace_id, [s.model_dump(mode="json") for s in body.subscribers]
        )
    return Envelope(message=f"{written} subscribers saved", data={"upserted": written})


@router.get("/subscribers")
def get_subscribers(
    workspace_id: WorkspacePath,
    session: SessionDep,
    access: AccessDep,
    status_: Annotated[SubscriberStatus | None, Query(alias="status")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> ListEnvelope[SubscriberPublic]:
    """A page of the workspace's subscribers by address, and how many there are."""
    access.require(workspace_id)
    rows, total = list_subscribers(
        session, workspace_id, status=status_, limit=limit, offset=offset
    )
    return ListEnvelope(
        data=[SubscriberPublic.model_validate(r.model_dump()) for r in rows], count=total
    )


_DONE = "<!doctype html><title>Unsubscribed</title><p>You are unsubscribed.</p>"


Token = Annotated[str, Path(min_length=8, max_length=64, pattern=r"^[a-f0-9]+$")]


def _unsubscribe(engine: Engine, token: str) -> HTMLResponse:
    with engine.begin() as conn:
        if not unsubscribe(conn, token):
            raise HTTPException(status.HTTP_404_NOT_FOUND, detail="unknown unsubscribe link")
    return HTMLResponse(_DONE)


@unsubscribe_router.post("/{token}", response_class=HTMLResponse)
def unsubscribe_one_click(token: Token, engine: EngineDep) -> HTMLResponse:
    """Unsubscribe the subscriber of this link (the RFC 8058 one-click POST a mail client
    sends for List-Unsubscribe-Post)."""
    return _unsubscribe(engine, token)


@unsubscribe_router.get("/{token}", response_class=HTMLResponse)
def unsubscribe_link(token: Token, engine: EngineDep) -> HTMLResponse:
    """Unsubscribe the subscriber of this link (a click on the link in the e-mail)."""
    return _unsubscribe(engine, token)
