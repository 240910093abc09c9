"""Prefect block types of scheduled-pipelines (register with `prefect block register -m blocks`)."""

from blocks.crew import CrewApi, UserSource
from blocks.destination import Destination

__all__ = ["CrewApi", "Destination", "UserSource"]
