"""The `{"success": true, "message": ..., "data": ...}` envelope the compatible APIs answer in."""

from __future__ import annotations

from typing import Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class Envelope(BaseModel, Generic[T]):
    """One object, with an optional message."""

    success: bool = True
    message: str | None = None
    data: T


class ListEnvelope(BaseModel, Generic[T]):
    """A page of objects and how many there are."""

    success: bool = True
    data: list[T]
    count: int
