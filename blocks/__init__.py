"""Prefect block types of scheduled-pipelines (register with `prefect block register -m blocks`)."""

from blocks.destination import Destination

__all__ = ["Destination"]
