"""The shell commands a document prints, as a reader would copy them: each ```bash block split
into commands (a command spans lines while a quote is open or a line ends in `\\`), and the
inline code spans that are commands (`.venv/bin/...`, `curl ...`, `PREFECT_API_URL=...`)."""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass

# An inline `code span` is a command to run when it starts like one of these.
INLINE_COMMAND = re.compile(r"^(?:\.venv/bin/|curl |PREFECT_API_URL=)")
_FENCE = re.compile(r"^```(\w*)\s*$")
_INLINE = re.compile(r"(?<!`)`([^`\n]+)`(?!`)")


@dataclass(frozen=True)
class Command:
    text: str  # as printed, continuation lines and trailing comments included
    section: str  # the heading it appears under
    line: int  # 1-based line of the document where it starts

    @property
    def words(self) -> list[str]:
        """The command's words as the shell splits them (comments dropped)."""
        return shlex.split(self.text.replace("\\\n", " "), comments=True)

    def __str__(self) -> str:
        return f"line {self.line} ({self.section}): {self.text}"


def _complete(text: str) -> bool:
    if text.rstrip().endswith("\\"):
        return False
    try:
        shlex.split(text, comments=True)
    except ValueError:  # "No closing quotation"
        return False
    return True


def commands(document: str) -> list[Command]:
    """Every command of `document`, in order."""
    found: list[Command] = []
    section = ""
    fence: str | None = None  # the open block's language
    pending: list[str] = []
    start = 0
    for number, line in enumerate(document.splitlines(), start=1):
        if fence_match := _FENCE.match(line):
            if fence is None:
                fence = fence_match.group(1)
                continue
            if pending:
                raise ValueError(f"line {start}: the block ends inside a command")
            fence = None
            continue
        if fence is not None:
            if fence not in {"bash", "sh", "shell"}:
                continue
            if not pending and not line.strip():
                continue
            if not pending:
                start = number
                if line.lstrip().startswith("#"):
                    continue
            pending.append(line)
            text = "\n".join(pending)
            if _complete(text):
                found.append(Command(text.strip(), section, start))
                pending = []
            continue
        if line.startswith("#"):
            section = line.lstrip("#").strip()
            continue
        found.extend(
            Command(span, section, number)
            for span in _INLINE.findall(line)
            if INLINE_COMMAND.match(span)
        )
    return found
