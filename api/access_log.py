"""One INFO line per request: `GET /api/records 200 in 3.1 ms from 127.0.0.1`.

Uvicorn's own access log goes quiet once Prefect configures logging (Prefect sets the
`uvicorn` logger to its server's level, WARNING by default), so `make run`'s `api.log` stayed
empty; the API logs its requests itself, outermost of its middleware, so refusals (401, 403)
and deadline answers (503) are logged with the status the client got. The path is logged
without its query string, and no header.
"""

from __future__ import annotations

import logging
import time

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("api.access")


def access_line(method: str, path: str, status: int, seconds: float, client: str | None) -> str:
    """The line for one answered request."""
    where = f" from {client}" if client else ""
    return f"{method} {path} {status} in {seconds * 1000:.1f} ms{where}"


class AccessLog:
    """ASGI middleware: log each HTTP request's method, path, status and time at INFO."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not logger.isEnabledFor(logging.INFO):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the client gets when the app fails before answering

        async def record(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, record)
        finally:
            client = scope.get("client")
            logger.info(
                access_line(
                    scope["method"],
                    scope["path"],
                    status,
                    time.perf_counter() - started,
                    client[0] if client else None,
                )
            )
