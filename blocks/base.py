"""Loading our blocks by name, with one error for a block that is not there."""

from __future__ import annotations

from typing import TypeVar, cast

from prefect.blocks.core import Block
from prefect.exceptions import ObjectNotFound

B = TypeVar("B", bound=Block)


class BlockNotFound(LookupError):
    """No block of this type has that name (what a 422 or a failed run says)."""

    def __init__(self, block_type: type[Block], name: str):
        super().__init__(f"no {block_type.__name__} block named {name!r}")
        self.name = name


async def load_block(block_type: type[B], name: str) -> B:
    """The block document `name` of `block_type`; BlockNotFound when there is none."""
    try:
        return cast(B, await block_type.aload(name))
    except (ValueError, ObjectNotFound):
        # Prefect 3.8 raises ValueError("Unable to find block document named ...").
        raise BlockNotFound(block_type, name) from None
