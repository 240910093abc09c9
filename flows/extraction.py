"""Pure extraction: JMESPath expressions compiled once, applied to a decoded JSON response."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import jmespath
import jmespath.exceptions
import jmespath.parser


def compile_expression(expression: str) -> jmespath.parser.ParsedResult:
    """Compile a JMESPath expression, raising ValueError with the parser's reason."""
    try:
        return jmespath.compile(expression)
    except jmespath.exceptions.JMESPathError as exc:
        reason = str(exc).strip().splitlines()[0]
        raise ValueError(f"invalid JMESPath expression {expression!r}: {reason}") from None


@dataclass(frozen=True)
class Extractor:
    """A compiled extraction: `root` selects the items, `fields` maps column -> expression."""

    root: jmespath.parser.ParsedResult | None = None
    fields: dict[str, jmespath.parser.ParsedResult] = field(default_factory=dict)
    key: jmespath.parser.ParsedResult | None = None

    @classmethod
    def compile(
        cls, root: str | None = None, fields: dict[str, str] | None = None, key: str | None = None
    ) -> Extractor:
        return cls(
            root=compile_expression(root) if root else None,
            fields={name: compile_expression(expr) for name, expr in (fields or {}).items()},
            key=compile_expression(key) if key else None,
        )


@dataclass
class Extracted:
    """Records keyed for storage, and the items that could not be keyed (with the reason)."""

    records: list[tuple[str | None, dict[str, Any]]]
    failures: list[dict[str, Any]]


def select_items(document: Any, extractor: Extractor) -> list[Any]:
    """The items of a response: what `root` selects (a list, or one object), else the document."""
    selected = extractor.root.search(document) if extractor.root else document
    if selected is None:
        return []
    return selected if isinstance(selected, list) else [selected]


def project(item: Any, extractor: Extractor) -> dict[str, Any]:
    """One record from one item: each field's value, null where the item lacks it."""
    if not extractor.fields:
        return item if isinstance(item, dict) else {"value": item}
    return {name: expr.search(item) for name, expr in extractor.fields.items()}


def key_of(item: Any, extractor: Extractor) -> str | None:
    """The record key as text; scalars as they are, anything else as compact JSON."""
    if extractor.key is None:
        return None
    value = extractor.key.search(item)
    if value is None:
        return None
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


def extract_records(document: Any, extractor: Extractor) -> Extracted:
    """Apply `extractor` to a decoded response; an item without a key is a failure, not a drop."""
    records: list[tuple[str | None, dict[str, Any]]] = []
    failures: list[dict[str, Any]] = []
    for index, item in enumerate(select_items(document, extractor)):
        key = key_of(item, extractor)
        if extractor.key is not None and key is None:
            failures.append({"index": index, "error": "key expression gave no value"})
            continue
        records.append((key, project(item, extractor)))
    return Extracted(records=records, failures=failures)
