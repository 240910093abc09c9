"""The newsletter's send step against a real SMTP server (aiosmtpd on 127.0.0.1): messages,
reused connections, refusals, retries, dropped connections, pacing, and the SmtpServer block."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from blocks.smtp import SmtpConfig, SmtpServer
from flows.newsletter_mail import (
    POLICY,
    Outgoing,
    Result,
    SendTotals,
    SmtpUnavailable,
    build_message,
    send_all,
    smtp_bytes,
)
from tests.utils.ports import free_port
from tests.utils.smtp_server import SmtpSink, serve_smtp

FROM = "Digest <digest@example.com>"
UNSUBSCRIBE = "https://news.example.com/api/v1/unsubscribe"
# Quick retries: the behaviour is the same at a second.
QUICK: dict[str, Any] = {"retry_delay": 0.01}


def address(i: int) -> str:
    return f"reader{i}@example.org"


def message(i: int, **changes: Any) -> Any:
    fields: dict[str, Any] = {
        "from_address": FROM,
        "to_address": address(i),
        "to_name": f"Léa Reader {i}",
        "subject": "Les nouvelles — issue 12",
        "html": f"<p>Bonjour Léa {i}</p>",
        "text": f"Bonjour Léa {i}",
        "message_id": f"<nl-12.sub-{i}@example.com>",
        "list_unsubscribe": f"{UNSUBSCRIBE}/token-{i}",
    }
    return build_message(**{**fields, **changes})


def letters(n: int) -> list[Outgoing]:
    return [Outgoing(key=i, to_address=address(i), message=message(i)) for i in range(n)]


def config_for(sink: SmtpSink, **changes: Any) -> SmtpConfig:
    fields: dict[str, Any] = {"host": sink.host, "port": sink.port, "from_address": FROM}
    return SmtpConfig(**{**fields, **changes})


def send(
    config: SmtpConfig, outgoing: Any, **options: Any
) -> tuple[SendTotals, dict[int, Result], list[int]]:
    """send_all's totals, the Result of each key, and every key on_result was called with."""
    results: list[Result] = []
    totals = asyncio.run(
        send_all(config, outgoing, on_result=results.append, **{**QUICK, **options})
    )
    return totals, {r.key: r for r in results}, [r.key for r in results]


@pytest.fixture
def sink() -> Iterator[SmtpSink]:
    with serve_smtp() as server:
        yield server


# -- the message ------------------------------------------------------------------------------


def test_twenty_messages_over_three_connections_each_arrive_once(sink: SmtpSink):
    totals, results, keys = send(config_for(sink), letters(20), connections=3)

    assert sink.by_recipient == Counter({address(i): 1 for i in range(20)})
    assert len(sink.messages) == 20
    assert totals == SendTotals(sent=20, failed=0, retried=0, reconnects=0)
    assert sorted(keys) == list(range(20))
    assert {(r.status, r.code, r.attempts) for r in results.values()} == {("sent", 250, 1)}
    assert results[0].answer.startswith("2.0.0 Ok: queued as")
    assert sink.connections == 3
    assert sink.quits == 3, "every connection ends with QUIT"


def test_each_message_is_text_then_html_with_its_message_id_and_one_click_unsubscribe(
    sink: SmtpSink,
):
    send(config_for(sink), letters(3), connections=1)

    received = {str(m["Message-ID"]): m for m in sink.messages}
    assert sorted(received) == [f"<nl-12.sub-{i}@example.com>" for i in range(3)]
    mail = received["<nl-12.sub-1@example.com>"]
    assert mail.get_content_type() == "multipart/alternative"
    text, html = mail.iter_parts()
    assert (text.get_content_type(), html.get_content_type()) == ("text/plain", "text/html")
    assert text.get_content_charset() == html.get_content_charset() == "utf-8"
    assert text.get_content().rstrip() == "Bonjour Léa 1"
    assert html.get_content().rstrip() == "<p>Bonjour Léa 1</p>"
    assert mail["List-Unsubscribe"] == f"<{UNSUBSCRIBE}/token-1>"
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert mail["Subject"] == "Les nouvelles — issue 12"
    assert mail["To"].addresses[0].display_name == "Léa Reader 1"
    assert mail["To"].addresses[0].addr_spec == address(1)
    assert mail["From"] == FROM
    assert mail["Date"].datetime is not None


def test_the_quick_writer_writes_what_the_email_generator_writes():
    mail = message(7, subject="A subject long enough that the email package has to fold it once")

    assert smtp_bytes(mail) == mail.as_bytes(policy=POLICY)


def test_a_long_unsubscribe_url_stays_one_literal_header_line():
    url = f"{UNSUBSCRIBE}/{'a' * 90}"
    data = smtp_bytes(message(1, list_unsubscribe=url))

    assert data is not None
    assert f"\r\nList-Unsubscribe: <{url}>\r\n".encode() in data


def test_without_an_unsubscribe_url_there_are_no_list_headers():
    assert message(1, list_unsubscribe=None)["List-Unsubscribe"] is None
    only_link = message(1, list_unsubscribe_post=False)
    assert only_link["List-Unsubscribe"] is not None
    assert only_link["List-Unsubscribe-Post"] is None


def test_a_header_with_a_line_break_is_refused():
    with pytest.raises(ValueError, match="Subject"):
        message(1, subject="Hello\r\nBcc: everyone@example.org")


def test_a_message_the_quick_writer_does_not_know_is_written_by_the_generator(sink: SmtpSink):
    mail = message(1)
    mail["X-Campaign"] = "spring"  # a header object of the email package, not a plain string
    assert smtp_bytes(mail) is None

    _, results, _ = send(config_for(sink), [Outgoing(1, address(1), mail)])

    assert results[1].status == "sent"
    assert sink.messages[0]["X-Campaign"] == "spring"


# -- connections ------------------------------------------------------------------------------


def test_fewer_connections_than_messages_are_each_reused(sink: SmtpSink):
    totals, _, _ = send(config_for(sink), letters(12), connections=2)

    assert totals.sent == 12
    assert sink.connections == 2


def test_fewer_messages_than_connections_open_one_connection_each(sink: SmtpSink):
    send(config_for(sink), letters(2), connections=4)

    assert sink.connections == 2


def test_an_async_iterable_of_messages_is_sent_as_it_is_read(sink: SmtpSink):
    async def produced() -> AsyncIterator[Outgoing]:
        for outgoing in letters(7):
            await asyncio.sleep(0)
            yield outgoing

    totals, results, _ = send(config_for(sink), produced(), connections=3, chunk=2)

    assert totals.sent == 7 and sorted(results) == list(range(7))


def test_nothing_to_send_opens_no_connection(sink: SmtpSink):
    totals, results, _ = send(config_for(sink), [], connections=4)

    assert totals == SendTotals() and results == {}
    assert sink.connections == 0


def test_a_server_down_at_the_start_raises_smtp_unavailable_before_any_result():
    config = SmtpConfig("127.0.0.1", free_port(), FROM)
    results: list[Result] = []

    refused = rf"cannot connect to smtp 127\.0\.0\.1:{config.port}: SMTPConnectError"
    with pytest.raises(SmtpUnavailable, match=refused):
        asyncio.run(send_all(config, letters(5), on_result=results.append, **QUICK))
    assert results == []


def test_losing_the_server_for_good_midway_raises_smtp_unavailable_after_the_results_so_far(
    sink: SmtpSink,
):
    results: list[Result] = []

    def record(result: Result) -> None:
        results.append(result)
        if len(results) == 5:
            sink.stop()

    with pytest.raises(SmtpUnavailable, match="lost every connection"):
        asyncio.run(
            send_all(config_for(sink), letters(30), connections=2, on_result=record, **QUICK)
        )
    keys = [r.key for r in results]
    assert len(keys) == len(set(keys)) and 5 <= len(keys) < 30
    assert all(r.status == "sent" for r in results)


def test_starttls_is_required_when_asked_for_not_skipped(sink: SmtpSink):
    with pytest.raises(SmtpUnavailable, match="STARTTLS"):
        send(config_for(sink, security="starttls"), letters(1))
    assert sink.messages == []


# -- refusals and retries ---------------------------------------------------------------------


def test_a_recipient_refused_once_with_451_gets_one_email_on_the_second_attempt(sink: SmtpSink):
    sink.refuse(address(4), code=451, times=1, message="4.7.1 try later")

    totals, results, _ = send(config_for(sink), letters(10), connections=3)

    assert sink.by_recipient == Counter({address(i): 1 for i in range(10)})
    assert (results[4].status, results[4].code, results[4].attempts) == ("sent", 250, 2)
    assert all(r.attempts == 1 for k, r in results.items() if k != 4)
    assert totals == SendTotals(sent=10, failed=0, retried=1, reconnects=0)
    # aiosmtplib resets the envelope itself after the refusal; the connection goes on.
    assert sink.resets == 1 and sink.connections == 3


def test_a_recipient_refused_with_550_fails_with_the_servers_answer_and_the_others_are_sent(
    sink: SmtpSink,
):
    sink.refuse(address(2), code=550, times=None, message="5.1.1 mailbox unavailable")

    totals, results, _ = send(config_for(sink), letters(6), connections=2)

    assert results[2] == Result(2, "failed", 550, "5.1.1 mailbox unavailable", attempts=1)
    assert all(r.status == "sent" for k, r in results.items() if k != 2)
    assert totals == SendTotals(sent=5, failed=1, retried=0, reconnects=0)
    assert address(2) not in sink.by_recipient


def test_a_recipient_still_refused_after_the_retries_fails_with_the_last_answer(sink: SmtpSink):
    sink.refuse(address(0), code=452, times=None, message="4.2.2 mailbox full")
    started = time.monotonic()

    totals, results, _ = send(
        config_for(sink), letters(3), connections=1, transient_retries=2, retry_delay=0.05
    )

    assert results[0] == Result(0, "failed", 452, "4.2.2 mailbox full", attempts=3)
    assert totals.retried == 2 and totals.sent == 2
    assert time.monotonic() - started >= 0.05 + 0.1, "the delay doubles after each refusal"


def test_a_dropped_connection_is_reopened_and_its_message_sent_again(sink: SmtpSink):
    sink.drop(address(3))

    totals, results, _ = send(config_for(sink), letters(8), connections=1)

    assert (results[3].status, results[3].attempts) == ("sent", 2)
    assert sink.by_recipient == Counter({address(i): 1 for i in range(8)})
    assert totals.reconnects == 1 and totals.sent == 8


def test_a_message_that_keeps_dropping_the_connection_fails_after_its_retries(sink: SmtpSink):
    sink.drop(address(1), times=100)

    totals, results, _ = send(config_for(sink), letters(4), connections=2, transient_retries=2)

    assert (results[1].status, results[1].code, results[1].attempts) == ("failed", None, 3)
    assert "SMTPServerDisconnected" in results[1].answer
    assert totals.sent == 3 and totals.failed == 1


def test_a_server_slower_than_the_timeout_fails_the_message_with_the_timeout(sink: SmtpSink):
    sink.hold_data(0.5)

    _, results, _ = send(
        config_for(sink, timeout=0.1), letters(1), connections=1, transient_retries=1
    )

    assert (results[0].status, results[0].attempts) == ("failed", 2)
    assert "Timeout" in results[0].answer


def test_on_result_is_called_once_per_key_whatever_happens(sink: SmtpSink):
    sink.refuse(address(1), code=451, times=2)
    sink.refuse(address(2), code=550, times=None)
    sink.refuse(address(3), code=421, times=1, message="4.3.2 closing")
    sink.drop(address(4))

    totals, results, keys = send(config_for(sink), letters(25), connections=3)

    assert sorted(keys) == list(range(25))
    assert totals.sent + totals.failed == 25
    assert (results[2].status, results[3].status) == ("failed", "sent")


# -- pacing -----------------------------------------------------------------------------------


def test_pace_is_awaited_before_each_chunk_with_its_size(sink: SmtpSink):
    paced: list[int] = []

    async def pace(n: int) -> None:
        paced.append(n)

    send(config_for(sink), letters(12), connections=1, chunk=5, pace=pace)

    assert paced == [5, 5, 2]


def test_paced_chunks_cover_every_send_retries_included(sink: SmtpSink):
    sink.refuse(address(5), code=451, times=1)
    paced: list[int] = []

    async def pace(n: int) -> None:
        paced.append(n)

    send(config_for(sink), letters(40), connections=3, chunk=8, pace=pace)

    assert sum(paced) == 41 and max(paced) <= 8


# -- login and the block ----------------------------------------------------------------------


def test_the_login_uses_the_secret_password_and_no_log_line_shows_it(
    caplog: pytest.LogCaptureFixture,
):
    with serve_smtp(credentials=("digest", "s3cret-pw")) as server:
        config = config_for(server, username="digest", password=SecretStr("s3cret-pw"))
        server.drop(address(0))  # a reconnect logs in again, and logs a warning
        with caplog.at_level(logging.DEBUG):
            totals, _, _ = send(config, letters(4), connections=2)

    assert totals.sent == 4
    assert server.logins == ["digest"] * 3
    assert "s3cret-pw" not in repr(config) and "s3cret-pw" not in caplog.text


def test_a_refused_login_raises_smtp_unavailable():
    with serve_smtp(credentials=("digest", "right")) as server:
        config = config_for(server, username="digest", password=SecretStr("wrong"), timeout=5)
        with pytest.raises(SmtpUnavailable, match="535"):
            send(config, letters(2))


def test_the_smtp_server_block_gives_its_config_and_never_shows_its_password():
    block = SmtpServer(
        host="smtp.example.com",
        username="digest",
        password=SecretStr("s3cret-pw"),
        from_address=FROM,
    )

    assert block.config() == SmtpConfig(
        host="smtp.example.com",
        port=587,
        from_address=FROM,
        security="starttls",
        username="digest",
        password=SecretStr("s3cret-pw"),
        timeout=30.0,
    )
    assert "s3cret-pw" not in repr(block) and "s3cret-pw" not in repr(block.config())
    assert SmtpServer.get_block_type_slug() == "smtp-server"


@pytest.mark.parametrize("bad", ["digest", "Digest <digest@>", "<@example.com>", ""])
def test_the_smtp_server_block_refuses_a_from_address_that_is_not_one(bad: str):
    with pytest.raises(ValidationError, match="from_address"):
        SmtpServer(host="smtp.example.com", from_address=bad)


def test_the_smtp_server_block_takes_a_bare_from_address():
    assert SmtpServer(host="h", from_address="digest@example.com").config().sender == (
        "digest@example.com"
    )


def test_a_quoted_template_decodes_to_the_personalised_part():
    """Filled per recipient, the part encoded once decodes to what personalise makes, with
    lines no longer than binascii's own quoted-printable (76, 78 for trailing whitespace)."""
    import binascii
    import random
    import string

    from flows.newsletter_mail import QuotedTemplate
    from flows.newsletter_render import PLACEHOLDERS, personal_values, personalise

    rnd = random.Random(7)
    alphabet = string.ascii_letters + " =\n\té—<>&"
    for _ in range(500):
        pieces = ["".join(rnd.choices(alphabet, k=rnd.randint(0, 200))) for _ in range(4)]
        unsub, name_token = PLACEHOLDERS
        body = pieces[0] + unsub + pieces[1] + name_token + pieces[2] + unsub + pieces[3]
        name = "".join(rnd.choices(alphabet.replace("\n", ""), k=rnd.randint(0, 90)))
        url = "https://x.example/u/" + "".join(rnd.choices(string.ascii_letters + "=?&", k=40))
        html = rnd.random() < 0.5
        payload = (
            QuotedTemplate(body, PLACEHOLDERS).fill(personal_values(name, url, html=html)).payload
        )
        expected = personalise(body, name=name, unsubscribe_url=url, html=html)
        expected = expected.replace("\r\n", "\n").replace("\r", "\n")
        expected += "" if expected.endswith("\n") else "\n"
        assert binascii.a2b_qp(payload.encode()).decode() == expected
        assert max(len(line) for line in payload.split("\n")) <= 78
