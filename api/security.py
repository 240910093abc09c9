"""Who gets in, checked before any route runs (ASGI middleware, so a request without a key
is refused before FastAPI reads its body): with API_KEYS, every request but the public ones
needs `Authorization: Bearer <key>` (401); without keys, only connections made to a loopback
address are served (and /health, for load balancers), however the server was told where to
listen (403). Public with keys: /health, the OpenAPI description and its pages (with their
assets), and the `/demo/...` routes when DEMO_ROUTES is on. A subscriber's unsubscribe link
is public always (its token is the credential). A key of WORKSPACE_KEYS reaches the
newsletter's routes only (403 elsewhere), where each route checks its workspaces.

The settings refuse `API_HOST=0.0.0.0` without keys, but `uvicorn api.main:app --host
0.0.0.0` bypasses `API_HOST`. Each connection's ASGI scope names the local address it
arrived on (`scope["server"]`), so the app checks that instead: a request that reached us
through another interface while no keys are configured is answered 403, and nothing runs.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

# What stays reachable without a key from anywhere: a liveness probe, nothing else.
PUBLIC_WITHOUT_KEYS = frozenset({"/health"})
# What needs no key when keys are set: the probe and the API's description.
PUBLIC_WITH_KEYS = frozenset(
    {"/health", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc"}
)
# The docs pages' own JavaScript and CSS (api/docs.py).
DOCS_ASSETS_PREFIX = "/static/docs/"
DEMO_PREFIX = "/demo/"
# A subscriber's one-click unsubscribe link: its token is the credential.
UNSUBSCRIBE_PREFIX = "/api/v1/unsubscribe/"
# Where a key bound to workspaces (WORKSPACE_KEYS) is let in: the newsletter's routes, each
# of which then checks the workspace (api/deps.py: get_access).
WORKSPACE_PREFIXES = ("/api/v1/", "/api/newsletters")
WORKSPACE_KEY_REFUSED = "this key is bound to workspaces: it reaches the newsletter routes only"
MISSING_KEY = "missing or invalid API key"
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


def key_accepted(keys: list[str], given: str) -> bool:
    """Whether `given` is one of `keys` (compared in constant time)."""
    return any(secrets.compare_digest(given.encode(), key.encode()) for key in keys)


def bearer_token(scope: Scope) -> str:
    """The token of the request's `Authorization: Bearer <token>` header, or ""."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return ""


def is_workspace_path(path: str) -> bool:
    return path.startswith(WORKSPACE_PREFIXES)


class Gate:
    """ASGI middleware: the rules above. `keys(scope)` (admin keys), `workspace_keys(scope)`
    and `demo(scope)` read the settings the app's routes see (tests override them)."""

    def __init__(
        self,
        app: ASGIApp,
        keys: Callable[[Scope], list[str]],
        demo: Callable[[Scope], bool],
        workspace_keys: Callable[[Scope], list[str]] = lambda scope: [],
    ):
        self.app = app
        self.keys = keys
        self.demo = demo
        self.workspace_keys = workspace_keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            refusal = self.refusal(scope)
            if refusal is not None:
                await refusal(scope, receive, send)
                return
        await self.app(scope, receive, send)

    def refusal(self, scope: Scope) -> JSONResponse | None:
        path = scope["path"]
        keys = self.keys(scope)
        bound = self.workspace_keys(scope)
        if path.startswith(UNSUBSCRIBE_PREFIX):
            return None
        if not keys and not bound:
            if path in PUBLIC_WITHOUT_KEYS or is_loopback(scope.get("server")):
                return None
            address = ":".join(map(str, scope["server"]))
            return JSONResponse({"detail": REFUSED.format(address=address)}, status_code=403)
        public = (
            path in PUBLIC_WITH_KEYS
            or path.startswith(DOCS_ASSETS_PREFIX)
            or (path.startswith(DEMO_PREFIX) and self.demo(scope))
        )
        token = bearer_token(scope)
        if public or key_accepted(keys, token):
            return None
        if key_accepted(bound, token):
            if is_workspace_path(path):
                return None
            return JSONResponse({"detail": WORKSPACE_KEY_REFUSED}, status_code=403)
        return JSONResponse(
            {"detail": MISSING_KEY}, status_code=401, headers={"WWW-Authenticate": "Bearer"}
        )
