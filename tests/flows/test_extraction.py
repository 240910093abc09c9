"""Extraction is pure: compiled JMESPath over a decoded response."""

import pytest

from flows.extraction import Extractor, compile_expression, extract_records

RESPONSE = {
    "data": [
        {"symbol": "BTC", "quote": {"usd": 64000.5}},
        {"symbol": "ETH", "quote": {"usd": 3100}},
        {"symbol": "XRP"},
    ]
}


def test_root_fields_and_key_project_each_item():
    out = extract_records(
        RESPONSE, Extractor.compile("data[]", {"symbol": "symbol", "usd": "quote.usd"}, "symbol")
    )
    assert out.records == [
        ("BTC", {"symbol": "BTC", "usd": 64000.5}),
        ("ETH", {"symbol": "ETH", "usd": 3100}),
        ("XRP", {"symbol": "XRP", "usd": None}),
    ]
    assert out.failures == []


def test_a_missing_field_is_null_not_an_error():
    out = extract_records({"a": 1}, Extractor.compile(None, {"a": "a", "b": "b.c.d"}))
    assert out.records == [(None, {"a": 1, "b": None})]


def test_an_item_without_key_is_a_recorded_failure():
    out = extract_records(RESPONSE, Extractor.compile("data[]", {}, "quote.usd"))
    assert [k for k, _ in out.records] == ["64000.5", "3100"]
    assert out.failures == [{"index": 2, "error": "key expression gave no value"}]


def test_root_selecting_one_object_gives_one_item():
    out = extract_records({"result": {"x": 1}}, Extractor.compile("result"))
    assert out.records == [(None, {"x": 1})]


def test_scalar_items_are_wrapped_and_nothing_selected_is_empty():
    assert extract_records([1, 2], Extractor()).records == [
        (None, {"value": 1}),
        (None, {"value": 2}),
    ]
    assert extract_records({"a": 1}, Extractor.compile("nothing[]")).records == []


def test_non_text_keys_are_compact_json():
    out = extract_records([{"id": {"a": 1, "b": 2}}], Extractor.compile(None, {}, "id"))
    assert out.records[0][0] == '{"a":1,"b":2}'


@pytest.mark.parametrize("bad", ["data[", "a.[b", "foo(", "`{"])
def test_invalid_expression_raises_value_error_with_reason(bad):
    with pytest.raises(ValueError, match="invalid JMESPath"):
        compile_expression(bad)
