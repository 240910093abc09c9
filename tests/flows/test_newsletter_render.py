"""The newsletter's issue: subject, inlined HTML and text parts, escaping, personalisation."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, date, datetime

from flows.newsletter_render import (
    NAME_PLACEHOLDER,
    UNSUBSCRIBE_PLACEHOLDER,
    personalise,
    render_issue,
    subject_line,
)

DAY = date(2026, 12, 3)


@dataclass(frozen=True)
class Item:
    """An item as flows.newsletter_sources collects it."""

    title: str
    url: str
    source: str = "hn"
    source_label: str = "Hacker News"
    published_at: datetime | None = datetime(2026, 12, 3, 6, 30, tzinfo=UTC)
    summary: str = ""
    author: str | None = None


def items(n: int) -> list[Item]:
    return [
        Item(f"Story {i}", f"https://example.com/{i}", summary=f"What story {i} says.")
        for i in range(n)
    ]


def test_the_subject_names_the_job_and_the_day_without_a_leading_zero():
    assert subject_line("Daily AI Digest", DAY) == "Daily AI Digest — 3 December 2026"
    assert subject_line("Weekly", date(2027, 1, 15)) == "Weekly — 15 January 2027"
    assert render_issue(job_name="Daily AI Digest", day=DAY, items=[]).subject == (
        "Daily AI Digest — 3 December 2026"
    )


def test_the_html_part_has_its_styles_inlined_and_no_style_tag_left():
    issue = render_issue(job_name="Digest", day=DAY, items=items(2))
    assert "<style" not in issue.html
    assert 'class="item" style="' in issue.html
    assert "max-width: 600px" in issue.html
    assert "<table" in issue.html and 'role="presentation"' in issue.html


def test_each_item_shows_its_title_link_source_date_and_summary_in_both_parts():
    issue = render_issue(
        job_name="Digest",
        day=DAY,
        items=[*items(3), Item("Undated", "https://u.example/x", published_at=None)],
    )
    for i in range(3):
        assert f"Story {i}\nhttps://example.com/{i}\n" in issue.text
        assert f"What story {i} says." in issue.text
        assert f'href="https://example.com/{i}"' in issue.html
    assert "Hacker News · 3 Dec 2026" in issue.text and "Hacker News · 3 Dec 2026" in issue.html
    assert "https://u.example/x\nHacker News\n" in issue.text


def test_a_title_with_a_script_tag_is_escaped_in_html_and_kept_as_text_in_text():
    issue = render_issue(
        job_name="Digest",
        day=DAY,
        items=[Item("<script>alert(1)</script> & more", "https://e.com/?a=1&b=2")],
    )
    assert "<script>" not in issue.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; &amp; more" in issue.html
    assert 'href="https://e.com/?a=1&amp;b=2"' in issue.html
    assert "<script>alert(1)</script> & more\nhttps://e.com/?a=1&b=2" in issue.text


def test_a_url_that_is_not_a_web_link_is_shown_but_not_linked():
    issue = render_issue(job_name="Digest", day=DAY, items=[Item("Bad", "javascript:alert(1)")])
    assert "javascript:" not in issue.html


def test_a_written_summary_replaces_the_items_own_and_intro_is_used():
    issue = render_issue(
        job_name="Digest",
        day=DAY,
        items=items(2),
        intro="Two things happened.",
        summaries={"https://example.com/1": "The model's words.", "https://other/": "Unused."},
    )
    assert issue.summaries == {
        "https://example.com/0": "What story 0 says.",
        "https://example.com/1": "The model's words.",
    }
    assert "The model's words." in issue.text and "What story 1 says." not in issue.text
    assert "The model's words." in issue.html and "Unused." not in issue.html
    assert issue.intro == "Two things happened." and "Two things happened." in issue.text


def test_without_an_intro_the_issue_says_how_many_stories_it_has():
    issue = render_issue(job_name="Digest", day=DAY, items=items(7))
    assert "7" in issue.intro
    assert issue.intro in issue.text and issue.intro in issue.html
    assert "1 new story" in render_issue(job_name="Digest", day=DAY, items=items(1)).intro


def test_both_parts_carry_the_name_and_unsubscribe_tokens():
    issue = render_issue(job_name="Digest", day=DAY, items=items(1))
    for part in (issue.html, issue.text):
        assert f"Hi {NAME_PLACEHOLDER}," in part
        assert UNSUBSCRIBE_PLACEHOLDER in part
    assert f'href="{UNSUBSCRIBE_PLACEHOLDER}"' in issue.html


def test_personalise_fills_both_tokens_and_escapes_the_name_in_html():
    issue = render_issue(job_name="Digest", day=DAY, items=items(1))
    url = "https://news.example/unsubscribe?t=abc&u=1"
    text = personalise(issue.text, name="Ann <Admin>", unsubscribe_url=url)
    assert "Hi Ann <Admin>," in text and f"Unsubscribe: {url}" in text
    html = personalise(issue.html, name="Ann <Admin>", unsubscribe_url=url, html=True)
    assert "Hi Ann &lt;Admin&gt;," in html and "<Admin>" not in html
    assert 'href="https://news.example/unsubscribe?t=abc&amp;u=1"' in html
    for part in (text, html):
        assert NAME_PLACEHOLDER not in part and UNSUBSCRIBE_PLACEHOLDER not in part


def test_personalise_greets_a_subscriber_without_a_name_as_there():
    body = f"Hi {NAME_PLACEHOLDER}, {UNSUBSCRIBE_PLACEHOLDER}"
    assert personalise(body, name=None, unsubscribe_url="u") == "Hi there, u"
    assert personalise(body, name="  ", unsubscribe_url="u") == "Hi there, u"


def test_a_name_that_looks_like_a_token_is_not_filled_in():
    body = f"Hi {NAME_PLACEHOLDER}, {UNSUBSCRIBE_PLACEHOLDER}"
    assert personalise(body, name=UNSUBSCRIBE_PLACEHOLDER, unsubscribe_url="u") == (
        f"Hi {UNSUBSCRIBE_PLACEHOLDER}, u"
    )


def test_an_issue_of_500_items_renders_every_item():
    many = items(500)
    start = time.perf_counter()
    issue = render_issue(job_name="Digest", day=DAY, items=many)
    elapsed = time.perf_counter() - start
    # Measured, not asserted: ~40 ms on a laptop-class CPU (Jinja plus css_inline).
    print(f"rendered 500 items in {elapsed * 1000:.0f} ms, html {len(issue.html):,} chars")
    assert issue.html.count('class="item"') == 500
    assert "https://example.com/499" in issue.text and len(issue.summaries) == 500
