"""A newsletter's content sources: their configs, pure parsers, item selection, and fetching.

Parsers and selection are plain functions over bytes, JSON and text; `fetch_sources` is the only
I/O, with the one `httpx.AsyncClient` the flow passes in.
"""

from __future__ import annotations

import asyncio
import io
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from typing import Annotated, Any, Literal
from urllib.parse import urljoin, urlsplit, urlunsplit

import dateutil.parser
import feedparser
import httpx
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator
from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

from blocks.validators import check_http_url
from flows.http import describe_error, raise_for_status

SOURCE_TYPES = ("rss", "reddit", "html")
SUMMARY_MAX_CHARS = 500
# Reddit answers 429 to generic client User-Agents; its rules ask for one naming the app.
USER_AGENT = "python:scheduled-pipelines.newsletter:0.1 (newsletter content source fetcher)"
SUBREDDIT = re.compile(r"^[A-Za-z0-9_]{2,21}$")


class SourceError(Exception):
    """A source answered, but with something that is not the content its type expects."""


def _http_url(value: str) -> str:
    try:
        return check_http_url(value)
    except ValueError:
        raise ValueError(f"{value!r} is not an http(s) URL") from None


HttpUrlStr = Annotated[str, AfterValidator(_http_url)]


class RssSource(BaseModel):
    """An RSS 2.0 or Atom feed."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["rss"]
    url: HttpUrlStr

    @property
    def label(self) -> str:
        return f"rss {self.url}"


class RedditSource(BaseModel):
    """A subreddit's public listing."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["reddit"]
    subreddit: str
    sort: Literal["new", "hot", "top"] = "new"
    limit: int = Field(default=25, ge=1, le=100)

    @field_validator("subreddit", mode="before")
    @classmethod
    def _check_subreddit(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        name = value.strip().removeprefix("/").removeprefix("r/")
        if not SUBREDDIT.match(name):
            raise ValueError(f"{value!r} is not a subreddit name (2-21 letters, digits, _)")
        return name

    @property
    def label(self) -> str:
        return f"reddit r/{self.subreddit}"


def _check_selector(value: str) -> str:
    try:
        LexborHTMLParser("").css(value)
    except SelectolaxError:
        raise ValueError(f"{value!r} is not a valid CSS selector") from None
    return value


class HtmlSource(BaseModel):
    """A web page scraped with CSS selectors: one item node each, the fields within it."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["html"]
    url: HttpUrlStr
    item_selector: str
    title_selector: str
    link_selector: str
    summary_selector: str | None = None
    date_selector: str | None = None

    @field_validator(
        "item_selector", "title_selector", "link_selector", "summary_selector", "date_selector"
    )
    @classmethod
    def _check_selectors(cls, value: str | None) -> str | None:
        return None if value is None else _check_selector(value)

    @property
    def label(self) -> str:
        return f"html {self.url}"


SourceSpec = Annotated[RssSource | RedditSource | HtmlSource, Field(discriminator="type")]


@dataclass(frozen=True)
class Item:
    """One piece of content from a source, as the newsletter will cite it."""

    title: str
    url: str
    source: str
    source_label: str
    published_at: datetime | None
    summary: str = ""
    author: str | None = None

    def as_json(self) -> dict[str, Any]:
        """The item as JSON-ready values (the date in ISO 8601)."""
        return {
            "title": self.title,
            "url": self.url,
            "source": self.source,
            "source_label": self.source_label,
            "published_at": self.published_at.isoformat() if self.published_at else None,
            "summary": self.summary,
            "author": self.author,
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Item:
        """The item `as_json` gave."""
        published = d.get("published_at")
        return cls(
            title=d["title"],
            url=d["url"],
            source=d["source"],
            source_label=d["source_label"],
            published_at=datetime.fromisoformat(published).astimezone(UTC) if published else None,
            summary=d.get("summary") or "",
            author=d.get("author"),
        )


# Text and dates ---------------------------------------------------------------------------------

# fmt: off
_BLOCK_TAGS = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
    "figure", "footer", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav",
    "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
})
# fmt: on
_HIDDEN_TAGS = frozenset({"script", "style", "template", "noscript"})


class _TextCollector(HTMLParser):
    """Text nodes of an HTML fragment; block boundaries become spaces, inline ones nothing."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden += 1
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BLOCK_TAGS:
            self.parts.append(" ")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.parts.append(data)


def collapse_whitespace(text: str) -> str:
    """Runs of whitespace as one space, none at the ends."""
    return " ".join(text.split())


def html_to_text(fragment: str) -> str:
    """Plain text of an HTML fragment, entities decoded and whitespace collapsed."""
    collector = _TextCollector()
    collector.feed(fragment)
    collector.close()
    return collapse_whitespace("".join(collector.parts))


def truncate(text: str, limit: int = SUMMARY_MAX_CHARS) -> str:
    """`text` cut to at most `limit` characters, at a word boundary where one is near, with …."""
    if len(text) <= limit:
        return text
    cut = text[: limit - 1]
    space = cut.rfind(" ")
    if space >= limit - 60:
        cut = cut[:space]
    return cut.rstrip() + "…"


def _parse_date(text: str | None) -> datetime | None:
    if not text or not text.strip():
        return None
    try:
        parsed = dateutil.parser.parse(text.strip())
    except (ValueError, OverflowError):
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


def _is_http(url: str) -> bool:
    return urlsplit(url).scheme in ("http", "https")


# Parsers ----------------------------------------------------------------------------------------


def _feed_text(entry: Any, key: str) -> str:
    value = entry.get(key) or ""
    detail = entry.get(f"{key}_detail") or {}
    if detail.get("type") in ("text/html", "application/xhtml+xml"):
        return html_to_text(value)
    return collapse_whitespace(value)


def _feed_date(entry: Any) -> datetime | None:
    parsed: time.struct_time | None = entry.get("published_parsed") or entry.get("updated_parsed")
    if parsed is None:
        return None
    # feedparser gives these in UTC already.
    return datetime(*parsed[:6], tzinfo=UTC)


def _item(
    source: RssSource | RedditSource | HtmlSource,
    *,
    title: str,
    url: str,
    published_at: datetime | None,
    summary: str = "",
    author: str | None = None,
) -> Item | None:
    """One parsed item, or None when it has no title or its link is not http(s)."""
    if not title or not url or not _is_http(url):
        return None
    return Item(
        title=title,
        url=url,
        source=source.type,
        source_label=source.label,
        published_at=published_at,
        summary=truncate(summary),
        author=author,
    )


def parse_feed(content: bytes, source: RssSource) -> list[Item]:
    """The entries of an RSS 2.0 or Atom document; entries without a title or link are skipped."""
    # A stream, not bytes: feedparser tries to open() a bytes argument as a local file name.
    parsed = feedparser.parse(io.BytesIO(content))
    if not parsed.get("version") and not parsed.entries:
        reason = parsed.get("bozo_exception")
        detail = f": {reason}" if reason else ""
        raise SourceError(f"not an RSS or Atom feed{detail}")
    items = []
    for entry in parsed.entries:
        href = (entry.get("link") or "").strip()
        item = _item(
            source,
            title=_feed_text(entry, "title"),
            url=urljoin(source.url, href) if href else "",
            published_at=_feed_date(entry),
            summary=_feed_text(entry, "summary"),
            author=collapse_whitespace(entry.get("author") or "") or None,
        )
        if item is not None:
            items.append(item)
    return items


def reddit_listing_url(source: RedditSource, base_url: str) -> str:
    """The public JSON listing of the source's subreddit, sorted and limited as configured."""
    return (
        f"{base_url.rstrip('/')}/r/{source.subreddit}/{source.sort}.json"
        f"?limit={source.limit}&raw_json=1"
    )


def _reddit_date(value: Any) -> datetime | None:
    if not isinstance(value, int | float) or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def parse_reddit(payload: Any, source: RedditSource, base_url: str) -> list[Item]:
    """The posts of a Reddit listing; stickied ones skipped, self posts linking to their thread."""
    listing = payload if isinstance(payload, dict) and payload.get("kind") == "Listing" else {}
    data = listing.get("data")
    children = data.get("children") if isinstance(data, dict) else None
    if not isinstance(children, list):
        raise SourceError("not a Reddit listing (expected kind Listing with data.children)")
    base = base_url.rstrip("/")
    items = []
    for child in children:
        post = child.get("data") if isinstance(child, dict) and child.get("kind") == "t3" else None
        if not isinstance(post, dict) or post.get("stickied"):
            continue
        title = collapse_whitespace(str(post.get("title") or ""))
        permalink = str(post.get("permalink") or "")
        url = str(post.get("url") or "")
        if post.get("is_self") or not url:
            url = f"{base}{permalink}" if permalink else ""
        elif url.startswith("/"):
            # Crossposts and galleries may carry a site-relative URL.
            url = f"{base}{url}"
        author = post.get("author")
        item = _item(
            source,
            title=title,
            url=url,
            published_at=_reddit_date(post.get("created_utc")),
            summary=collapse_whitespace(str(post.get("selftext") or "")),
            author=author if isinstance(author, str) and author != "[deleted]" else None,
        )
        if item is not None:
            items.append(item)
    return items


def _html_date(node: LexborNode | None) -> datetime | None:
    if node is None:
        return None
    return _parse_date(node.attributes.get("datetime")) or _parse_date(node.text())


def parse_html(content: str, source: HtmlSource, page_url: str) -> list[Item]:
    """The items a page's selectors find; an item without a title or an http(s) link is skipped."""
    tree = LexborHTMLParser(content)
    items = []
    for node in tree.css(source.item_selector):
        title_node = node.css_first(source.title_selector)
        link_node = node.css_first(source.link_selector)
        title = html_to_text(title_node.html or "") if title_node else ""
        href = (link_node.attributes.get("href") or "").strip() if link_node else ""
        summary_node = node.css_first(source.summary_selector) if source.summary_selector else None
        date_node = node.css_first(source.date_selector) if source.date_selector else None
        item = _item(
            source,
            title=title,
            url=urljoin(page_url, href) if href else "",
            published_at=_html_date(date_node),
            summary=html_to_text(summary_node.html or "") if summary_node else "",
        )
        if item is not None:
            items.append(item)
    return items


# Selection --------------------------------------------------------------------------------------


def normalise_url(url: str) -> str:
    """`url` as a dedupe key: scheme and host lower-case, no fragment, trailing slash or utm_*."""
    parts = urlsplit(url.strip())
    userinfo, at, host = parts.netloc.rpartition("@")
    # Filtered as raw `k=v` pieces so the other parameters keep their order and encoding.
    query = "&".join(
        piece for piece in parts.query.split("&") if piece and not piece.lower().startswith("utm_")
    )
    netloc = f"{userinfo}{at}{host.lower()}"
    return urlunsplit((parts.scheme.lower(), netloc, parts.path.rstrip("/"), query, ""))


def _newest_first(item: Item) -> tuple[bool, float]:
    return (item.published_at is None, -item.published_at.timestamp() if item.published_at else 0.0)


def select_items(
    items: Iterable[Item], *, now: datetime, days_back: float | None, max_items: int
) -> list[Item]:
    """The newest `max_items` distinct items of the last `days_back` days; undated ones last."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    cutoff = now - timedelta(days=days_back) if days_back is not None else None
    kept = [
        item
        for item in items
        if cutoff is None or item.published_at is None or item.published_at >= cutoff
    ]
    # Stable sort: undated items, and items of equal date, keep their source/document order.
    kept.sort(key=_newest_first)
    seen: set[str] = set()
    selected: list[Item] = []
    for item in kept:
        if len(selected) >= max_items:
            break
        key = normalise_url(item.url)
        if key not in seen:
            seen.add(key)
            selected.append(item)
    return selected


# Fetching ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SourceFailure:
    """A source that gave no items this run, and why."""

    source: str
    label: str
    error: str


@dataclass
class Scraped:
    """Every source's items in source order, the sources that failed, items parsed per label."""

    items: list[Item]
    failures: list[SourceFailure]
    fetched: dict[str, int]


async def _get(client: httpx.AsyncClient, url: str, accept: str) -> httpx.Response:
    response = await client.get(
        url, headers={"User-Agent": USER_AGENT, "Accept": accept}, follow_redirects=True
    )
    raise_for_status(response)
    return response


async def _fetch_source(
    client: httpx.AsyncClient, source: SourceSpec, reddit_base_url: str
) -> list[Item]:
    if isinstance(source, RedditSource):
        url = reddit_listing_url(source, reddit_base_url)
        response = await _get(client, url, "application/json")
        try:
            payload = response.json()
        except ValueError:
            raise SourceError(f"not JSON from GET {url}") from None
        return parse_reddit(payload, source, reddit_base_url)
    if isinstance(source, RssSource):
        response = await _get(
            client,
            source.url,
            "application/rss+xml, application/atom+xml, application/xml;q=0.9, */*;q=0.5",
        )
        return parse_feed(response.content, source)
    response = await _get(client, source.url, "text/html, application/xhtml+xml;q=0.9, */*;q=0.5")
    # After redirects, relative links are relative to where the page really is.
    return parse_html(response.text, source, str(response.url))


async def fetch_sources(
    client: httpx.AsyncClient,
    sources: Sequence[SourceSpec],
    *,
    reddit_base_url: str,
    concurrency: int = 8,
) -> Scraped:
    """Fetch and parse all sources concurrently; one that fails is recorded, never raised."""
    if concurrency < 1:
        raise ValueError("concurrency must be at least 1")
    semaphore = asyncio.Semaphore(concurrency)

    async def one(source: SourceSpec) -> list[Item] | SourceFailure:
        async with semaphore:
            # One broken source must not cost the newsletter the others; cancellation still
            # propagates (it is not an Exception).
            try:
                return await _fetch_source(client, source, reddit_base_url)
            except Exception as exc:
                error = str(exc) if isinstance(exc, SourceError) else describe_error(exc)
                return SourceFailure(source=source.type, label=source.label, error=error)

    results = await asyncio.gather(*(one(source) for source in sources))
    scraped = Scraped(items=[], failures=[], fetched={})
    for source, result in zip(sources, results, strict=True):
        if isinstance(result, SourceFailure):
            scraped.failures.append(result)
            continue
        scraped.items.extend(result)
        scraped.fetched[source.label] = scraped.fetched.get(source.label, 0) + len(result)
    return scraped
