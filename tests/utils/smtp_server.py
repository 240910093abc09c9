"""A real SMTP server on 127.0.0.1 (aiosmtpd) that records what it receives, with scripted faults.

In tests: `with serve_smtp() as sink: ... sink.port ...`, the server in a thread of the test
process. `sink.refuse("a@x.org", code=451, times=1)` refuses that recipient at RCPT (then
accepts), `sink.refuse("b@x.org", code=550, times=None)` always; `sink.drop("c@x.org")` hangs
up at the end of that recipient's DATA, unanswered and without keeping the message;
`sink.hold_data(0.2)` slows every DATA; `sink.stop()` takes the server away. `sink.connections`
counts SMTP sessions (one EHLO each), `sink.quits` those that ended with QUIT, `sink.resets`
the RSETs.

In benchmarks, in its own process so it does not share the client's core, only counting:
`python -m tests.utils.smtp_server --port 8025` prints "ready", and on SIGTERM or SIGINT
"received N messages over M connections".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import signal
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any, cast

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, LoginPassword, Session


@dataclass
class _Fault:
    code: int
    message: str
    times: int | None  # None: every time


@dataclass
class SmtpSink:
    """What the server received, and the faults it is told to play (safe across threads)."""

    host: str = "127.0.0.1"
    port: int = 0
    record: bool = True
    credentials: tuple[str, str] | None = None
    messages: list[EmailMessage] = field(default_factory=list)
    by_recipient: Counter[str] = field(default_factory=Counter)
    received: int = 0
    connections: int = 0
    quits: int = 0
    resets: int = 0
    logins: list[str] = field(default_factory=list)
    data_delay: float = 0.0
    _refusals: dict[str, _Fault] = field(default_factory=dict)
    _drops: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _controller: Controller | None = field(default=None, repr=False)

    def stop(self) -> None:
        """Stop listening and drop every connection (the server goes away midway)."""
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def refuse(
        self, address: str, code: int = 451, times: int | None = 1, message: str | None = None
    ) -> None:
        """Answer `code` to RCPT TO this address, `times` times (None: always), then accept."""
        text = message or ("4.7.1 try later" if code < 500 else "5.1.1 no such user")
        with self._lock:
            self._refusals[address.lower()] = _Fault(code, text, times)

    def drop(self, address: str, times: int = 1) -> None:
        """Hang up at the end of this recipient's DATA, unanswered, `times` times."""
        with self._lock:
            self._drops[address.lower()] = times

    def hold_data(self, seconds: float) -> None:
        """Wait this long before answering each DATA."""
        self.data_delay = seconds

    # -- aiosmtpd's handler hooks (run on the server's thread) -------------------------------

    async def handle_EHLO(
        self, server: SMTP, session: Session, envelope: Envelope, hostname: str, responses: Any
    ) -> Any:
        session.host_name = hostname
        with self._lock:
            self.connections += 1
        return responses

    async def handle_RCPT(
        self, server: SMTP, session: Session, envelope: Envelope, address: str, options: Any
    ) -> str:
        with self._lock:
            fault = self._refusals.get(address.lower())
            if fault is not None and fault.times != 0:
                if fault.times is not None:
                    fault.times -= 1
                return f"{fault.code} {fault.message}"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.data_delay:
            await asyncio.sleep(self.data_delay)
        with self._lock:
            for address in envelope.rcpt_tos:
                left = self._drops.get(address.lower(), 0)
                if left:
                    self._drops[address.lower()] = left - 1
                    assert server.transport is not None
                    server.transport.close()
                    return "421 gone"  # never reaches the client: the connection is closed
            self.received += 1
            if not self.record:
                return "250 OK"
            self.by_recipient.update(envelope.rcpt_tos)
        content = envelope.original_content or b""
        parsed = email.message_from_bytes(content, policy=email.policy.default)
        with self._lock:
            self.messages.append(parsed)
        return f"250 2.0.0 Ok: queued as {self.received}"

    async def handle_RSET(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.resets += 1
        return "250 OK"

    async def handle_QUIT(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        with self._lock:
            self.quits += 1
        return "221 Bye"

    def authenticate(
        self, server: SMTP, session: Session, envelope: Envelope, mechanism: str, data: Any
    ) -> AuthResult:
        ok = isinstance(data, LoginPassword) and self.credentials == (
            data.login.decode(),
            data.password.decode(),
        )
        if ok:
            with self._lock:
                self.logins.append(data.login.decode())
        # handled=False: aiosmtpd answers 535 itself (handled=True would leave the client waiting).
        return AuthResult(success=ok, handled=False)


class _AnyPortController(Controller):
    """aiosmtpd's Controller on port 0: the port the system chose is read after binding."""

    def _trigger_server(self) -> None:
        server = cast(asyncio.Server, self.server)
        self.port = server.sockets[0].getsockname()[1]
        super()._trigger_server()


def _controller(sink: SmtpSink, loop: asyncio.AbstractEventLoop | None = None) -> Controller:
    options: dict[str, Any] = {}
    if sink.credentials is not None:
        # Plain-text AUTH on loopback only: the tests' server has no certificate.
        options = {"authenticator": sink.authenticate, "auth_require_tls": False}
    return _AnyPortController(
        sink,
        hostname=sink.host,
        port=sink.port,
        loop=loop,
        server_hostname="sink.test",
        ready_timeout=10,
        **options,
    )


@contextmanager
def serve_smtp(
    *, record: bool = True, credentials: tuple[str, str] | None = None, port: int = 0
) -> Iterator[SmtpSink]:
    """An SMTP server on 127.0.0.1 (`port`, else a free one) until the block ends; yields
    its sink."""
    sink = SmtpSink(port=port, record=record, credentials=credentials)
    controller = _controller(sink)
    controller.start()
    sink.port, sink._controller = controller.port, controller
    try:
        yield sink
    finally:
        sink.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    try:
        import uvloop

        loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
    except ImportError:
        loop = asyncio.new_event_loop()
    sink = SmtpSink(port=args.port, record=False)
    controller = _controller(sink, loop)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    controller.start()
    print("ready", flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        stop.wait()
    controller.stop()
    print(f"received {sink.received} messages over {sink.connections} connections", flush=True)
    sys.exit(0)


if __name__ == "__main__":
    main()
