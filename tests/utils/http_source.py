"""A real HTTP server on 127.0.0.1 whose answers each test scripts (the API a schedule calls)."""

from __future__ import annotations

import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    # Answer only once this is set (at most 60 s): a call that lasts until the test says.
    hold: threading.Event | None = None


@dataclass
class HttpSource:
    """Answers by path: a list of replies is played in order, the last one repeating."""

    url: str
    routes: dict[str, list[Reply]] = field(default_factory=dict)
    hits: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def route(self, path: str, *replies: Reply) -> str:
        self.routes[path] = list(replies)
        self.hits[path] = 0
        return path

    def reply_for(self, path: str) -> Reply:
        with self.lock:
            replies = self.routes.get(path)
            if not replies:
                return Reply(404, {"error": f"no route {path}"})
            index = min(self.hits[path], len(replies) - 1)
            self.hits[path] += 1
            return replies[index]


@contextmanager
def serve_http_source(port: int = 0) -> Iterator[HttpSource]:
    source = HttpSource(url="")

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            path = self.path.split("?", 1)[0]
            length = int(self.headers.get("content-length") or 0)
            body = self.rfile.read(length) if length else b""
            source.requests.append(
                {
                    "method": self.command,
                    "path": self.path,
                    "headers": dict(self.headers),
                    "body": body,
                }
            )
            reply = source.reply_for(path)
            if reply.delay:
                time.sleep(reply.delay)
            if reply.hold is not None:
                reply.hold.wait(60)
            payload = (
                reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
            )
            self.send_response(reply.status)
            self.send_header("content-type", reply.headers.get("content-type", "application/json"))
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    source.url = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield source
    finally:
        server.shutdown()
        server.server_close()


# A price API's answer, one record (the api_call pipeline's examples extract it).
PRICES = {"data": [{"symbol": "BTC", "quote": {"usd": 64000.0}}]}


@contextmanager
def prices_source() -> Iterator[HttpSource]:
    """A source answering /prices with PRICES and /down with 500."""
    with serve_http_source() as source:
        source.route("/prices", Reply(200, PRICES))
        source.route("/down", Reply(500, {"error": "down"}))
        yield source
