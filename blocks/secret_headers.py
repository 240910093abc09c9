"""Credential headers of an HTTP source, kept in a Prefect Secret block (never in parameters).

The block holds the headers as a JSON object *in a string*: Prefect masks a string Secret
everywhere its API shows block documents (`POST /api/block_documents/filter` answers
`"********"`), but shows a JSON-object Secret's value in clear. So a schedule that names a
Secret holding an object is refused at creation, a run that meets one still works but warns,
and `python -m blocks.secret_headers protect NAME` re-saves such a block as a string.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
from typing import Any, cast

from prefect.blocks.system import Secret
from pydantic import SecretStr

from blocks.base import load_block

logger = logging.getLogger(__name__)
PROTECT = "python -m blocks.secret_headers protect {name}"


def headers_from(value: Any, name: str) -> dict[str, str]:
    """The headers a Secret's value holds (Secret.get() parses a JSON string already)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError:
            raise ValueError(f"Secret block {name!r} must hold a JSON object of headers") from None
    if not isinstance(value, dict):
        raise ValueError(f"Secret block {name!r} must hold a JSON object of headers")
    return {str(k): str(v) for k, v in value.items()}


def shown_in_clear(name: str) -> str:
    """What to tell about a Secret block whose JSON-object value Prefect's API shows."""
    return (
        f"Secret block {name!r} holds a JSON object, which Prefect's API shows in clear; "
        f"store it as a string (Secret(value=json.dumps(headers))) or run: "
        + PROTECT.format(name=name)
    )


async def load_secret_headers(name: str | None) -> dict[str, str]:
    """The headers the Secret block `name` holds ({} without a name)."""
    if not name:
        return {}
    secret = cast(Secret[Any], await load_block(Secret, name))
    if not masked(secret):
        logger.warning(shown_in_clear(name))
    return headers_from(secret.get(), name)


def masked(secret: Secret[Any]) -> bool:
    """Whether Prefect's API masks this Secret's value: a string is, a JSON object is not."""
    return isinstance(secret.value, SecretStr)


async def protect(name: str) -> bool:
    """Re-save Secret block `name` with its headers as a string; False if it was one already."""
    secret = cast(Secret[Any], await load_block(Secret, name))
    if masked(secret):
        return False
    headers = headers_from(secret.get(), name)
    await Secret(value=json.dumps(headers)).save(name, overwrite=True)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m blocks.secret_headers")
    commands = parser.add_subparsers(dest="command", required=True)
    protect_command = commands.add_parser(
        "protect", help="re-save a JSON-object Secret block of headers as a string (masked)"
    )
    protect_command.add_argument("name")
    args = parser.parse_args(argv)
    changed = asyncio.run(protect(args.name))
    print(
        f"Secret block {args.name!r} now holds its headers as a string (masked by Prefect)"
        if changed
        else f"Secret block {args.name!r} already holds a string: nothing to do"
    )


if __name__ == "__main__":
    main()
