"""Newsletter sources without Prefect: config validation, parsers, selection, fetching."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from pydantic import TypeAdapter, ValidationError

from flows.newsletter_sources import (
    SOURCE_TYPES,
    USER_AGENT,
    HtmlSource,
    Item,
    RedditSource,
    RssSource,
    Scraped,
    SourceError,
    SourceFailure,
    SourceSpec,
    fetch_sources,
    html_to_text,
    normalise_url,
    parse_feed,
    parse_html,
    parse_reddit,
    select_items,
    truncate,
)

SPEC: TypeAdapter[RssSource | RedditSource | HtmlSource] = TypeAdapter(SourceSpec)
RSS = RssSource(type="rss", url="https://blog.example.com/feed.xml")
ATOM = RssSource(type="rss", url="https://atom.example.com/feed")
REDDIT = RedditSource(type="reddit", subreddit="MachineLearning", sort="top", limit=10)
HTML = HtmlSource(
    type="html",
    url="https://news.example.com/list/",
    item_selector="article.post",
    title_selector="h2",
    link_selector="a.more",
    summary_selector=".teaser",
    date_selector="time",
)
REDDIT_BASE = "https://reddit.test"

RSS_DOC = b"""<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Blog</title>
<item>
  <title>First  post &amp; more</title>
  <link>https://blog.example.com/first</link>
  <description>&lt;p&gt;Hello &lt;b&gt;world&lt;/b&gt;, and&lt;/p&gt;
    &lt;p&gt;goodbye&lt;/p&gt;</description>
  <pubDate>Tue, 02 Jan 2024 10:00:00 +0200</pubDate>
  <author>ann@example.com (Ann)</author>
</item>
<item>
  <title>Relative link, no date</title>
  <link>/second</link>
</item>
<item><description>No title: skipped</description><link>https://blog.example.com/x</link></item>
</channel></rss>"""

ATOM_DOC = b"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom"><title>Atom</title><id>urn:feed</id>
<updated>2024-03-01T12:00:00Z</updated>
<entry>
  <title type="html">Atom &lt;em&gt;entry&lt;/em&gt;</title>
  <link rel="alternate" href="https://atom.example.com/entries/1"/>
  <id>urn:1</id>
  <updated>2024-03-01T12:00:00Z</updated>
  <summary>Plain summary</summary>
  <author><name>Bob</name></author>
</entry>
</feed>"""


def listing(*posts: dict[str, Any]) -> dict[str, Any]:
    return {"kind": "Listing", "data": {"children": [{"kind": "t3", "data": p} for p in posts]}}


LISTING = listing(
    {
        "title": "Weekly thread",
        "url": "https://www.reddit.com/r/MachineLearning/comments/s1/weekly/",
        "permalink": "/r/MachineLearning/comments/s1/weekly/",
        "created_utc": 1704189600,
        "stickied": True,
    },
    {
        "title": "A new paper",
        "url": "https://arxiv.org/abs/2401.00001",
        "permalink": "/r/MachineLearning/comments/p1/a_new_paper/",
        "created_utc": 1704189600.0,
        "selftext": "",
        "author": "alice",
        "stickied": False,
    },
    {
        "title": "Ask: how do I  start?",
        "url": "https://www.reddit.com/r/MachineLearning/comments/p2/ask/",
        "permalink": "/r/MachineLearning/comments/p2/ask/",
        "is_self": True,
        "created_utc": 1704186000,
        "selftext": "Line one.\n\nLine   two.",
        "author": "[deleted]",
        "stickied": False,
    },
)

HTML_PAGE = """<html><body>
<article class="post">
  <h2>Release <em>2.0</em></h2>
  <a class="more" href="../posts/release-2#top">Read</a>
  <div class="teaser"><p>Big   changes.</p><p>More soon.</p></div>
  <time datetime="2024-02-01T09:30:00+01:00">1 Feb</time>
</article>
<article class="post">
  <h2>Naive date</h2>
  <a class="more" href="/posts/naive">Read</a>
  <time>2024-02-03 08:00</time>
</article>
<article class="post"><h2>No link: skipped</h2></article>
<article class="post"><a class="more" href="/no-title">No title: skipped</a></article>
<article class="post">
  <h2>Script link: skipped</h2><a class="more" href="javascript:x()">x</a>
</article>
</body></html>"""


# Validation -------------------------------------------------------------------------------------


def test_the_type_field_picks_the_source_model() -> None:
    assert isinstance(SPEC.validate_python({"type": "rss", "url": "https://a.io/f"}), RssSource)
    reddit = SPEC.validate_python({"type": "reddit", "subreddit": "r/Python"})
    assert isinstance(reddit, RedditSource)
    assert (reddit.subreddit, reddit.sort, reddit.limit) == ("Python", "new", 25)
    assert SOURCE_TYPES == ("rss", "reddit", "html")


def test_labels_name_the_source_for_results_and_logs() -> None:
    assert RSS.label == "rss https://blog.example.com/feed.xml"
    assert REDDIT.label == "reddit r/MachineLearning"
    assert HTML.label == "html https://news.example.com/list/"


@pytest.mark.parametrize(
    "url", ["ftp://x", "file:///etc/passwd", "javascript:alert(1)", "/feed.xml", "http://"]
)
def test_a_url_that_is_not_absolute_http_is_refused_by_name(url: str) -> None:
    with pytest.raises(ValidationError, match="is not an http\\(s\\) URL") as caught:
        SPEC.validate_python({"type": "rss", "url": url})
    assert repr(url) in str(caught.value)


@pytest.mark.parametrize("name", ["a", "x" * 22, "has space", "r/", "bad-dash", "../etc"])
def test_a_bad_subreddit_name_is_refused(name: str) -> None:
    with pytest.raises(ValidationError, match="is not a subreddit name"):
        RedditSource(type="reddit", subreddit=name)


@pytest.mark.parametrize("limit", [0, 101])
def test_the_reddit_limit_is_between_1_and_100(limit: int) -> None:
    with pytest.raises(ValidationError):
        RedditSource(type="reddit", subreddit="Python", limit=limit)


def test_a_bad_css_selector_is_refused_naming_it() -> None:
    config = HTML.model_dump() | {"date_selector": "time["}
    with pytest.raises(ValidationError, match="'time\\[' is not a valid CSS selector"):
        SPEC.validate_python(config)


def test_an_unknown_source_type_or_an_extra_field_is_refused() -> None:
    with pytest.raises(ValidationError, match="'twitter' found using 'type' does not match"):
        SPEC.validate_python({"type": "twitter", "url": "https://x.com"})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        SPEC.validate_python({"type": "rss", "url": "https://a.io/f", "proxy": "x"})


# Items and text ---------------------------------------------------------------------------------


def test_an_item_round_trips_through_json() -> None:
    item = Item(
        "T", "https://a.io/1", "rss", "rss https://a.io/f", datetime(2024, 1, 2, tzinfo=UTC), "s"
    )
    undated = Item("U", "https://a.io/2", "html", "html https://a.io/", None, author="me")
    for original in (item, undated):
        assert Item.from_json(json.loads(json.dumps(original.as_json()))) == original
    assert item.as_json()["published_at"] == "2024-01-02T00:00:00+00:00"


def test_html_becomes_plain_text_with_blocks_spaced_and_scripts_dropped() -> None:
    text = html_to_text(
        "<p>Hello <b>world</b>, ok</p><p>bye&nbsp;&amp; more</p><script>x()</script>"
    )
    assert text == "Hello world, ok bye & more"


def test_a_long_summary_is_cut_to_500_characters_with_an_ellipsis() -> None:
    cut = truncate("word " * 200)
    assert len(cut) <= 500
    assert cut.endswith("word…")
    assert truncate("short") == "short"


# Parsers ----------------------------------------------------------------------------------------


def test_an_rss_feed_gives_its_items_with_utc_dates_and_plain_summaries() -> None:
    items = parse_feed(RSS_DOC, RSS)
    assert items == [
        Item(
            title="First post & more",
            url="https://blog.example.com/first",
            source="rss",
            source_label="rss https://blog.example.com/feed.xml",
            published_at=datetime(2024, 1, 2, 8, 0, tzinfo=UTC),
            summary="Hello world, and goodbye",
            author="ann@example.com (Ann)",
        ),
        Item(
            title="Relative link, no date",
            url="https://blog.example.com/second",
            source="rss",
            source_label="rss https://blog.example.com/feed.xml",
            published_at=None,
        ),
    ]


def test_an_atom_feed_gives_its_entries() -> None:
    (item,) = parse_feed(ATOM_DOC, ATOM)
    assert item.title == "Atom entry"
    assert item.url == "https://atom.example.com/entries/1"
    assert item.published_at == datetime(2024, 3, 1, 12, tzinfo=UTC)
    assert (item.summary, item.author) == ("Plain summary", "Bob")


@pytest.mark.parametrize("body", [b"", b"not xml <<<", b'{"a": 1}', b"<html><p>hi</p></html>"])
def test_a_document_that_is_no_feed_is_a_source_error(body: bytes) -> None:
    with pytest.raises(SourceError, match="not an RSS or Atom feed"):
        parse_feed(body, RSS)


def test_an_empty_but_valid_feed_gives_no_items() -> None:
    assert parse_feed(b'<rss version="2.0"><channel><title>x</title></channel></rss>', RSS) == []


def test_a_reddit_listing_skips_stickied_posts_and_links_self_posts_to_their_thread() -> None:
    items = parse_reddit(LISTING, REDDIT, REDDIT_BASE + "/")
    assert [(i.title, i.url, i.author) for i in items] == [
        ("A new paper", "https://arxiv.org/abs/2401.00001", "alice"),
        ("Ask: how do I start?", f"{REDDIT_BASE}/r/MachineLearning/comments/p2/ask/", None),
    ]
    assert items[0].published_at == datetime(2024, 1, 2, 10, tzinfo=UTC)
    assert items[1].summary == "Line one. Line two."
    assert {(i.source, i.source_label) for i in items} == {("reddit", "reddit r/MachineLearning")}


@pytest.mark.parametrize(
    "payload",
    [[], "x", {"kind": "t3"}, {"kind": "Listing", "data": {}}, {"error": 403, "message": "No"}],
)
def test_a_reddit_payload_of_the_wrong_shape_is_a_source_error(payload: Any) -> None:
    with pytest.raises(SourceError, match="not a Reddit listing"):
        parse_reddit(payload, REDDIT, REDDIT_BASE)


def test_an_html_page_gives_items_with_resolved_links_and_dates() -> None:
    items = parse_html(HTML_PAGE, HTML, "https://news.example.com/list/")
    assert [(i.title, i.url) for i in items] == [
        ("Release 2.0", "https://news.example.com/posts/release-2#top"),
        ("Naive date", "https://news.example.com/posts/naive"),
    ]
    assert items[0].published_at == datetime(2024, 2, 1, 8, 30, tzinfo=UTC)
    assert items[0].summary == "Big changes. More soon."
    assert items[1].published_at == datetime(2024, 2, 3, 8, 0, tzinfo=UTC)
    assert items[1].summary == ""
    assert {(i.source, i.source_label) for i in items} == {("html", HTML.label)}


# Selection --------------------------------------------------------------------------------------

NOW = datetime(2024, 5, 10, 12, tzinfo=UTC)


def item(url: str, days_ago: float | None, title: str = "t") -> Item:
    published = NOW - timedelta(days=days_ago) if days_ago is not None else None
    return Item(title, url, "rss", "rss x", published)


def test_urls_normalise_case_fragment_trailing_slash_and_utm_params() -> None:
    assert (
        normalise_url("HTTPS://Example.COM/Path/?utm_source=x&id=3&UTM_medium=y#frag")
        == "https://example.com/Path?id=3"
    )
    assert normalise_url("https://example.com/") == "https://example.com"


def test_selection_drops_old_items_and_puts_undated_ones_last_newest_first() -> None:
    items = [item("https://a/1", 1), item("https://a/old", 8), item("https://a/u", None)]
    items += [item("https://a/2", 0.5), item("https://a/u2", None)]
    selected = select_items(items, now=NOW, days_back=7, max_items=10)
    assert [i.url for i in selected] == [
        "https://a/2",
        "https://a/1",
        "https://a/u",
        "https://a/u2",
    ]


def test_selection_without_days_back_keeps_every_date() -> None:
    items = [item("https://a/old", 400), item("https://a/new", 1)]
    selected = select_items(items, now=NOW, days_back=None, max_items=10)
    assert [i.url for i in selected] == ["https://a/new", "https://a/old"]


def test_selection_dedupes_by_normalised_url_keeping_the_newest() -> None:
    items = [
        item("https://a.io/post?utm_source=rss", 3, "older copy"),
        item("https://A.io/post/#comments", 1, "newest copy"),
        item("https://a.io/post/", 2, "middle copy"),
        item("https://a.io/other", 2, "other"),
    ]
    selected = select_items(items, now=NOW, days_back=7, max_items=10)
    assert [i.title for i in selected] == ["newest copy", "other"]


def test_selection_stops_at_max_items() -> None:
    items = [item(f"https://a/{n}", n) for n in range(5)]
    assert [i.url for i in select_items(items, now=NOW, days_back=None, max_items=2)] == [
        "https://a/0",
        "https://a/1",
    ]
    assert select_items(items, now=NOW, days_back=None, max_items=0) == []


# Fetching ---------------------------------------------------------------------------------------


def fetch(handler: Any, sources: list[Any], **options: Any) -> Scraped:
    async def run() -> Scraped:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            return await fetch_sources(client, sources, reddit_base_url=REDDIT_BASE, **options)

    return asyncio.run(run())


def test_fetching_records_failing_sources_and_returns_the_others_items_in_order() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        match request.url.host, request.url.path:
            case "blog.example.com", _:
                return httpx.Response(200, content=RSS_DOC)
            case "reddit.test", _:
                return httpx.Response(200, json=LISTING)
            case "news.example.com", _:
                return httpx.Response(200, text=HTML_PAGE)
            case "down.example.com", _:
                return httpx.Response(503)
            case "slow.example.com", _:
                raise httpx.ReadTimeout("timed out", request=request)
            case "junk.example.com", _:
                return httpx.Response(200, content=b"<<< not a feed")
        raise AssertionError(f"unexpected {request.url}")

    down = RssSource(type="rss", url="https://down.example.com/feed")
    slow = RssSource(type="rss", url="https://slow.example.com/feed")
    junk = RssSource(type="rss", url="https://junk.example.com/feed")
    scraped = fetch(handler, [RSS, down, REDDIT, slow, HTML, junk])

    assert [i.source for i in scraped.items] == ["rss", "rss", "reddit", "reddit", "html", "html"]
    assert scraped.items[:2] == parse_feed(RSS_DOC, RSS)
    assert scraped.fetched == {RSS.label: 2, REDDIT.label: 2, HTML.label: 2}
    assert scraped.failures == [
        SourceFailure(
            "rss",
            down.label,
            "HTTP 503 Service Unavailable from GET https://down.example.com/feed",
        ),
        SourceFailure(
            "rss", slow.label, "timeout: ReadTimeout calling GET https://slow.example.com/feed"
        ),
        SourceFailure("rss", junk.label, scraped.failures[2].error),
    ]
    assert scraped.failures[2].error.startswith("not an RSS or Atom feed")

    (reddit,) = [r for r in seen if r.url.host == "reddit.test"]
    assert str(reddit.url) == f"{REDDIT_BASE}/r/MachineLearning/top.json?limit=10&raw_json=1"
    assert reddit.headers["User-Agent"] == USER_AGENT
    assert "python-httpx" not in USER_AGENT


def test_a_reddit_answer_that_is_not_json_is_a_failure() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, text="<html>blocked</html>")

    scraped = fetch(handler, [REDDIT])
    assert scraped.items == []
    assert scraped.fetched == {}
    assert scraped.failures == [
        SourceFailure(
            "reddit",
            REDDIT.label,
            f"not JSON from GET {REDDIT_BASE}/r/MachineLearning/top.json?limit=10&raw_json=1",
        )
    ]


def test_a_connection_error_is_a_failure_not_an_exception() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    scraped = fetch(handler, [RSS])
    assert scraped.failures == [
        SourceFailure("rss", RSS.label, "connection error: ConnectError: connection refused")
    ]


def test_a_redirected_page_resolves_links_against_where_it_landed() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/list/":
            return httpx.Response(301, headers={"Location": "https://news.example.com/v2/list/"})
        return httpx.Response(200, text=HTML_PAGE)

    scraped = fetch(handler, [HTML])
    assert scraped.items[1].url == "https://news.example.com/posts/naive"
    assert scraped.items[0].url == "https://news.example.com/v2/posts/release-2#top"


def test_fetching_keeps_at_most_concurrency_requests_in_flight() -> None:
    in_flight = peak = 0

    async def handler(request: httpx.Request) -> httpx.Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.01)
        in_flight -= 1
        return httpx.Response(200, content=RSS_DOC)

    sources = [RssSource(type="rss", url=f"https://blog.example.com/{n}") for n in range(6)]
    scraped = fetch(handler, sources, concurrency=2)
    assert peak == 2
    assert len(scraped.items) == 12
    assert scraped.failures == []
