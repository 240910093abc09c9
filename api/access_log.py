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
from typing import Protocol

from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("api.access")


def access_line(method: str, path: str, status: int, seconds: float, client: str | None) -> str:
    """The line for one answered request."""
    where = f" from {client}" if client else ""
    return f"{method} {path} {status} in {seconds * 1000:.1f} ms{where}"


class StatusOf:
    """An ASGI `send` that remembers the status of the answer it sends (500 until one is:
    what the client gets when the app fails before answering)."""

    def __init__(self, send: Send):
        self.send = send
        self.status = 500

    async def __call__(self, message: Message) -> None:
        if message["type"] == "http.response.start":
            self.status = message["status"]
        await self.send(message)


class RequestObserver(Protocol):
    """What else wants each answered request (api/metrics.py counts them)."""

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None: ...


class AccessLog:
    """ASGI middleware: log each HTTP request's method, path, status and time at INFO, and
    hand it to `observer` (by its route template, `/api/schedules/{name}`) if given."""

    def __init__(self, app: ASGIApp, observer: RequestObserver | None = None):
        self.app = app
        self.observer = observer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        log = logger.isEnabledFor(logging.INFO)
        if scope["type"] != "http" or not (log or self.observer):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        answer = StatusOf(send)
        try:
            await self.app(scope, receive, answer)
        finally:
            seconds = time.perf_counter() - started
            client = scope.get("client")
            method, status = scope["method"], answer.status
            if log:
                where = client[0] if client else None
                logger.info(access_line(method, scope["path"], status, seconds, where))
            if self.observer is not None:
                route = getattr(scope.get("route"), "path", None) or "unmatched"
                self.observer.observe_request(method, route, status, seconds)
