"""Records that api_call schedules extracted."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from api.bounds import Offset
from api.deps import SessionDep, SettingsDep
from db.crud import list_api_records
from db.models import ApiRecordPublic

router = APIRouter(prefix="/api/records", tags=["records"])


class RecordsPublic(BaseModel):
    data: list[ApiRecordPublic]
    count: int


@router.get("")
def list_records(
    session: SessionDep,
    settings: SettingsDep,
    schedule: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    offset: Offset = 0,
) -> RecordsPublic:
    """A page of extracted records, newest first, optionally for one schedule."""
    rows, count = list_api_records(
        session, schedule=schedule, limit=min(limit, settings.max_page_size), offset=offset
    )
    return RecordsPublic(data=[ApiRecordPublic.model_validate(r) for r in rows], count=count)
