"""No open API off loopback: without API_KEYS, only connections made to a loopback address
are served (and /health, for load balancers), however the server was told where to listen.

The settings refuse `API_HOST=0.0.0.0` without keys, but `uvicorn api.main:app --host
0.0.0.0` bypasses `API_HOST`. Each connection's ASGI scope names the local address it
arrived on (`scope["server"]`), so the app checks that instead: a request that reached us
through another interface while no keys are configured is answered 403, and nothing runs.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# What stays reachable without a key from anywhere: a liveness probe, nothing else.
PUBLIC_WITHOUT_KEYS = frozenset({"/health"})
REFUSED = (
    "this API has no API_KEYS and answers only on a loopback address: "
    "set API_KEYS to serve it on {address}"
)


def is_loopback(server: Any) -> bool:
    """Whether the local address a connection arrived on is loopback (or a unix socket)."""
    if not server:
        return True  # no address: a unix socket or an in-process call
    host = str(server[0])
    if server[1] is None or host == "localhost":
        return True  # a unix socket's path, or the name
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class LoopbackOnlyWithoutKeys:
    """ASGI middleware: with no keys configured, refuse requests that arrived off loopback."""

    def __init__(self, app: ASGIApp, keys_configured: Callable[[Scope], bool]):
        self.app = app
        self.keys_configured = keys_configured

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["path"] not in PUBLIC_WITHOUT_KEYS
            and not is_loopback(scope.get("server"))
            and not self.keys_configured(scope)
        ):
            address = ":".join(map(str, scope["server"]))
            response = JSONResponse({"detail": REFUSED.format(address=address)}, status_code=403)
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
