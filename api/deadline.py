"""Answers within a bounded time: a request still waiting on a dependency after
REQUEST_DEADLINE_SECONDS gets 503 with Retry-After instead of hanging.

Prefect's client retries a lost connection five times with exponential backoff (about a
minute) once it has connected, so while Prefect's server is down a run-now would wait that
long. A request cut off here may have done its work already: a client that retries with the
same `Idempotency-Key` gets the run the first attempt created.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

RETRY_AFTER_SECONDS = 5


def unavailable(reason: str, retry_after: int = RETRY_AFTER_SECONDS) -> JSONResponse:
    """503 with the reason and when to try again."""
    return JSONResponse(
        {"detail": reason}, status_code=503, headers={"Retry-After": str(retry_after)}
    )


class Deadline:
    """ASGI middleware: an HTTP request not answered within `seconds(scope)` gets 503."""

    def __init__(self, app: ASGIApp, seconds: Callable[[Scope], float]):
        self.app = app
        self.seconds = seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def sending(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        seconds = self.seconds(scope)
        try:
            async with asyncio.timeout(seconds):
                await self.app(scope, receive, sending)
        except TimeoutError:
            if started:  # the answer was already on its way: nothing better to send
                raise
            response = unavailable(f"no answer from our dependencies within {seconds:g} s")
            await response(scope, receive, send)
