"""Prefect block types of scheduled-pipelines (register with `prefect block register -m blocks`)."""

from blocks.chat_model import ChatModel
from blocks.crew import CrewApi, UserSource
from blocks.destination import Destination
from blocks.smtp import SmtpServer

__all__ = ["ChatModel", "CrewApi", "Destination", "SmtpServer", "UserSource"]
