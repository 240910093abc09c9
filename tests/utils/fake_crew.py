"""A fake crew API (the crew scheduler's CREW_API_URL): an ASGI app with settable latency, faults.

Which users fail is decided by a stable hash of the request body, so a test knows in advance
which users end `failed` and a failing user keeps failing across its retries (as a real,
broken input would). `fail_first` makes every user's first attempts answer 503 instead, to
show that per-request retries recover transient faults.

In tests: `with serve_fake_crew(FakeCrew(latency=0.01)) as crew: crew.url ...` (uvicorn in a
thread). In benchmarks, in its own process so it does not share the client's core:
`python -m tests.utils.fake_crew --port 8765 --latency 0.05`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import zlib
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import uvicorn

from tests.utils.serve import serve_asgi

Fate = Literal["ok", "fail", "hang"]


@dataclass
class FakeCrew:
    latency: float = 0.0
    fail_rate: float = 0.0
    timeout_rate: float = 0.0
    hang_seconds: float = 30.0
    fail_first: int = 0
    url: str = ""
    hits: Counter[str] = field(default_factory=Counter)
    bodies: list[dict[str, Any]] = field(default_factory=list)
    record_bodies: bool = True

    @staticmethod
    def key(payload: dict[str, Any]) -> str:
        context = payload.get("customer_business_background_latest")
        return f"{context}|{payload.get('customer_goal_latest')}"

    def fate(self, key: str) -> Fate:
        """What this user always gets: a 500, a hang past any sane timeout, or an answer."""
        share = zlib.crc32(key.encode()) % 10_000 / 10_000
        if share < self.fail_rate:
            return "fail"
        if share < self.fail_rate + self.timeout_rate:
            return "hang"
        return "ok"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        try:
            payload = json.loads(body)
        except ValueError:
            await _answer(send, 400, {"error": "body is not JSON"})
            return
        key = self.key(payload)
        self.hits[key] += 1
        if self.record_bodies:
            self.bodies.append(payload)
        if self.latency:
            await asyncio.sleep(self.latency)
        fate = self.fate(key)
        if fate == "hang":
            await asyncio.sleep(self.hang_seconds)
        if fate == "fail":
            await _answer(send, 500, {"error": "crew run failed"})
        elif self.hits[key] <= self.fail_first:
            await _answer(send, 503, {"error": "crew busy"})
        else:
            goal = payload.get("customer_goal_latest")
            await _answer(send, 200, {"result": f"plan for {goal}", "received": payload})


async def _answer(send: Any, status: int, body: dict[str, Any]) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


@contextmanager
def serve_fake_crew(crew: FakeCrew, port: int = 0) -> Iterator[FakeCrew]:
    """Serve `crew` on 127.0.0.1 from a thread; `crew.url` is its run-crew URL."""
    with serve_asgi(crew, port) as base_url:
        crew.url = f"{base_url}/run-crew"
        yield crew


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument("--fail-rate", type=float, default=0.0)
    parser.add_argument("--timeout-rate", type=float, default=0.0)
    args = parser.parse_args()
    crew = FakeCrew(
        latency=args.latency,
        fail_rate=args.fail_rate,
        timeout_rate=args.timeout_rate,
        record_bodies=False,
    )
    uvicorn.run(
        crew,
        host="127.0.0.1",
        port=args.port,
        log_level="warning",
        lifespan="on",
        http="httptools",
        loop="uvloop",
        backlog=4096,
    )


if __name__ == "__main__":
    main()
