"""The chat model block and the newsletter copy it writes: request, answer, one call per issue."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from blocks.base import BlockNotFound
from blocks.chat_model import (
    ChatEndpoint,
    ChatError,
    ChatModel,
    Copy,
    copy_request,
    parse_copy,
    resolve_chat_model,
    write_copy,
)

KEY = "sk-very-secret-key"


@dataclass(frozen=True)
class Item:
    """The fields of flows.newsletter_sources.Item the model reads."""

    title: str
    url: str
    summary: str = ""


def items(n: int) -> list[Item]:
    return [Item(f"Story {i}", f"https://example.com/{i}", f"About {i}.") for i in range(n)]


def answer(content: str) -> dict[str, Any]:
    return {"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]}


def copy_json(urls: list[str]) -> str:
    return json.dumps(
        {"intro": "Today's picks.", "summaries": [{"url": u, "summary": f"S {u}"} for u in urls]}
    )


def endpoint() -> ChatEndpoint:
    return ChatModel(base_url="http://llm.test:8080/v1/", model="m", api_key=KEY).endpoint()


def test_the_request_asks_for_a_json_object_with_intro_and_summaries_of_every_item():
    body = copy_request(items(2), "playful", "Daily AI Digest", "gpt-x", 0.3)
    assert body["model"] == "gpt-x" and body["temperature"] == 0.3
    assert body["response_format"] == {"type": "json_object"}
    system, user = body["messages"]
    assert (system["role"], user["role"]) == ("system", "user")
    assert "playful" in system["content"] and "Daily AI Digest" in system["content"]
    assert '"intro"' in system["content"] and '"summaries"' in system["content"]
    assert json.loads(user["content"]) == [
        {"url": "https://example.com/0", "title": "Story 0", "summary": "About 0."},
        {"url": "https://example.com/1", "title": "Story 1", "summary": "About 1."},
    ]


def test_without_a_tone_the_request_asks_for_a_neutral_one_and_long_summaries_are_clipped():
    body = copy_request([Item("T", "https://e/", "word " * 1000)], None, "D", "m", 0)
    assert "neutral" in body["messages"][0]["content"]
    assert len(json.loads(body["messages"][1]["content"])[0]["summary"]) <= 600


def test_a_good_answer_gives_the_intro_and_the_summaries_by_url():
    urls = ["https://example.com/0", "https://example.com/1"]
    assert parse_copy(answer(copy_json(urls)), urls) == Copy(
        intro="Today's picks.",
        summaries={u: f"S {u}" for u in urls},
    )


def test_an_answer_fenced_in_markdown_is_read():
    urls = ["https://example.com/0"]
    fenced = f"```json\n{copy_json(urls)}\n```"
    assert parse_copy(answer(fenced), urls).summaries == {urls[0]: f"S {urls[0]}"}


def test_summaries_of_urls_not_in_the_issue_are_ignored():
    copy = parse_copy(
        answer(copy_json(["https://example.com/0", "https://made.up/"])),
        [
            "https://example.com/0",
            "https://example.com/1",
        ],
    )
    assert copy.summaries == {"https://example.com/0": "S https://example.com/0"}


def test_an_answer_that_is_not_json_is_a_chat_error_with_a_short_excerpt():
    with pytest.raises(ChatError, match="not JSON") as info:
        parse_copy(answer("Sure! Here is your newsletter: " + "blah " * 500), [])
    assert len(str(info.value)) < 300


def test_an_answer_without_an_intro_or_message_is_a_chat_error():
    with pytest.raises(ChatError, match="no intro"):
        parse_copy(answer(json.dumps({"summaries": []})), [])
    with pytest.raises(ChatError, match="no message"):
        parse_copy({"choices": []}, [])


def copy_of(handler: Any, n: int) -> Copy:
    """What write_copy makes of `n` items against a fake API answering with `handler`."""

    async def run() -> Copy:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await write_copy(client, endpoint(), items(n), tone="dry", job_name="D")

    return asyncio.run(run())


def test_twenty_items_take_one_call_carrying_the_api_key():
    requests: list[httpx.Request] = []
    urls = [item.url for item in items(20)]

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(request)
        return httpx.Response(200, json=answer(copy_json(urls)))

    copy = copy_of(handler, 20)
    assert len(requests) == 1
    assert str(requests[0].url) == "http://llm.test:8080/v1/chat/completions"
    assert requests[0].headers["Authorization"] == f"Bearer {KEY}"
    assert len(json.loads(json.loads(requests[0].content)["messages"][1]["content"])) == 20
    assert len(copy.summaries) == 20 and copy.intro == "Today's picks."


def test_a_refused_call_is_a_chat_error_naming_status_and_url():
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(500, text="upstream model crashed\n" * 100)

    with pytest.raises(ChatError) as info:
        copy_of(handler, 2)
    message = str(info.value)
    assert message.startswith("HTTP 500 from http://llm.test:8080/v1/chat/completions: upstream")
    assert len(message) < 300 and info.value.status == 500


def test_neither_the_block_nor_its_endpoint_shows_the_api_key():
    block = ChatModel(base_url="https://api.example.com/v1", model="m", api_key=KEY)
    assert KEY not in repr(block) and KEY not in str(block)
    assert KEY not in repr(block.endpoint())
    assert block.endpoint().headers == {"Authorization": f"Bearer {KEY}"}


def test_a_block_without_a_key_sends_no_authorization():
    block = ChatModel(base_url="http://h:8080/v1", model="m")
    assert block.endpoint() == ChatEndpoint(
        url="http://h:8080/v1/chat/completions", model="m", headers={}, temperature=0.3, timeout=60
    )


@pytest.mark.parametrize("base_url", ["ftp://h/v1", "/v1", "not a url", "http://"])
def test_a_base_url_that_is_not_http_is_refused(base_url: str):
    with pytest.raises(ValidationError):
        ChatModel(base_url=base_url, model="m")


def test_resolving_a_block_gives_its_endpoint_and_an_unknown_name_is_block_not_found(
    monkeypatch: pytest.MonkeyPatch,
):
    saved = {"llm": ChatModel(base_url="http://llm.test:8080/v1/", model="m", api_key=KEY)}

    async def aload(cls: type[ChatModel], name: str) -> ChatModel:
        if name not in saved:
            # What Prefect 3.8 raises for a missing block document.
            raise ValueError(f"Unable to find block document named {name}")
        return saved[name]

    monkeypatch.setattr(ChatModel, "aload", classmethod(aload))
    assert asyncio.run(resolve_chat_model("llm")) == endpoint()
    with pytest.raises(BlockNotFound, match="no ChatModel block named 'nope'"):
        asyncio.run(resolve_chat_model("nope"))
