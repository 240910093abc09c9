"""How our HTTP clients verify the endpoints that blocks and deployments name: one TLS context.

httpx builds a verifying context for every client it creates, which parses the whole CA bundle
(`SSL_CERT_FILE`, else certifi's): ~25-50 ms of CPU per client, per flow run. The context is
built once per process instead, and shared (an `ssl.SSLContext` is safe to share between
connections and threads). This module lives outside `flows/` on purpose: the warm worker's
zygote builds the context before it forks and its children keep it, whereas each child imports
the flow modules again (deployments/zygote.py).
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def tls_context() -> ssl.SSLContext:
    """httpx's default verifying context (honours SSL_CERT_FILE / SSL_CERT_DIR), built once."""
    return httpx.create_ssl_context()
