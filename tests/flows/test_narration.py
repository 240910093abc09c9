"""The log lines' pure parts: URLs without secrets, one line per exchange."""

from __future__ import annotations

import httpx

from flows.narration import count, exchange_line, shown_url


def test_a_url_keeps_its_path_and_query_names_but_no_values_and_no_user_info():
    url = "https://user:pw@api.example.com:8443/v1/prices?api_key=s3cret&limit=10#frag"
    assert shown_url(url) == "https://api.example.com:8443/v1/prices?api_key=…&limit=…"
    assert "s3cret" not in shown_url(url) and "pw" not in shown_url(url)
    assert shown_url("http://h/x") == "http://h/x"


def test_an_exchange_is_one_line_with_method_url_status_size_and_time():
    request = httpx.Request("GET", "https://api.example.com/v1?token=abc")
    response = httpx.Response(200, content=b"x" * 4312, request=request)
    assert exchange_line(response, 0.2149) == (
        "GET https://api.example.com/v1?token=… → 200 OK, 4,312 bytes in 0.21 s"
    )


def test_counts_read_as_words():
    assert (count(1, "item"), count(3, "item"), count(1000, "user")) == (
        "1 item",
        "3 items",
        "1,000 users",
    )
    assert count(2, "reply", "replies") == "2 replies"
