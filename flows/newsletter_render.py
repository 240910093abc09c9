"""The newsletter's issue: subject, HTML and text parts rendered once, personalised per recipient.

Pure: no I/O beyond reading the two templates in flows/templates once per process. The rendered
parts carry two literal tokens, the subscriber's name and unsubscribe URL, that `personalise`
swaps with `str.replace`: one render per issue, not one per recipient (10,000 renders and CSS
inlinings would cost minutes; 10,000 replaces cost milliseconds).
"""

from __future__ import annotations

import functools
import html as html_lib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Protocol

import css_inline
import httpx
from jinja2 import Environment, FileSystemLoader, StrictUndefined, Template, select_autoescape

UNSUBSCRIBE_PLACEHOLDER = "%%UNSUBSCRIBE_URL%%"
NAME_PLACEHOLDER = "%%SUBSCRIBER_NAME%%"

TEMPLATES = Path(__file__).parent / "templates"

# English names whatever the process's locale (strftime's %B follows LC_TIME).
MONTHS = (
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
)


class ItemLike(Protocol):
    """What the issue reads of a collected item (flows.newsletter_sources.Item has it)."""

    @property
    def title(self) -> str: ...
    @property
    def url(self) -> str: ...
    @property
    def source(self) -> str: ...
    @property
    def source_label(self) -> str: ...
    @property
    def published_at(self) -> datetime | None: ...
    @property
    def summary(self) -> str: ...
    @property
    def author(self) -> str | None: ...


@dataclass(frozen=True)
class Issue:
    """One rendered issue: the parts every recipient gets before personalisation."""

    subject: str
    html: str
    text: str
    intro: str
    summaries: dict[str, str]  # item url -> the summary shown


def subject_line(job_name: str, day: date) -> str:
    """`Daily AI Digest — 3 December 2026`."""
    return f"{job_name} — {day.day} {MONTHS[day.month - 1]} {day.year}"


def short_date(moment: datetime | None) -> str:
    """`3 Dec 2026` (the UTC day), or "" for an item without a date."""
    if moment is None:
        return ""
    # A naive time is taken as UTC, which is what the sources promise anyway.
    day = moment.astimezone(UTC) if moment.tzinfo else moment
    return f"{day.day} {MONTHS[day.month - 1][:3]} {day.year}"


def default_intro(count: int) -> str:
    """The intro of an issue nobody wrote one for: how many stories it has."""
    if count == 0:
        return "No new stories since the last issue."
    return f"{count:,} new {'story' if count == 1 else 'stories'} since the last issue."


PLACEHOLDERS = (UNSUBSCRIBE_PLACEHOLDER, NAME_PLACEHOLDER)


def personal_values(
    name: str | None, unsubscribe_url: str, *, html: bool = False
) -> dict[str, str]:
    """What each placeholder of a part becomes for one recipient: their name (else "there")
    and unsubscribe URL, HTML-escaped for the HTML part."""
    shown = name.strip() if name and name.strip() else "there"
    if html:
        shown, unsubscribe_url = html_lib.escape(shown), html_lib.escape(unsubscribe_url)
    return {UNSUBSCRIBE_PLACEHOLDER: unsubscribe_url, NAME_PLACEHOLDER: shown}


def personalise(body: str, *, name: str | None, unsubscribe_url: str, html: bool = False) -> str:
    """One recipient's copy of a rendered part: their name (else "there") and unsubscribe URL."""
    values = personal_values(name, unsubscribe_url, html=html)
    # The URL first: a name is the subscriber's own text, so it must not be scanned for tokens.
    for placeholder in PLACEHOLDERS:
        body = body.replace(placeholder, values[placeholder])
    return body


def render_issue(
    *,
    job_name: str,
    day: date,
    items: Sequence[ItemLike],
    intro: str | None = None,
    summaries: Mapping[str, str] | None = None,
    tone: str | None = None,
) -> Issue:
    """The issue of `day`: subject, HTML part (CSS inlined) and text part of `items`.

    `intro` and `summaries` (by item URL) are the written copy, e.g. a chat model's; without
    them the issue says how many stories it has and shows each item's own summary. `tone` only
    matters to whoever writes that copy; it is accepted so callers can pass their settings
    through unchanged.
    """
    del tone  # the templates have a single voice; see the docstring
    written = summaries or {}
    shown = [_view(item, written.get(item.url) or item.summary) for item in items]
    subject, intro = subject_line(job_name, day), intro or default_intro(len(shown))
    context = {
        "subject": subject,
        "job_name": job_name,
        "day": f"{day.day} {MONTHS[day.month - 1]} {day.year}",
        "intro": intro,
        "items": shown,
        "name": NAME_PLACEHOLDER,
        "unsubscribe_url": UNSUBSCRIBE_PLACEHOLDER,
    }
    html_template, text_template = _templates()
    return Issue(
        subject=subject,
        html=_inliner().inline(html_template.render(context)),
        text=text_template.render(context),
        intro=intro,
        summaries={view["url"]: view["summary"] for view in shown},
    )


def _view(item: ItemLike, summary: str) -> dict[str, Any]:
    """What the templates show of one item."""
    when = short_date(item.published_at)
    return {
        "title": " ".join(item.title.split()) or item.url,
        "url": item.url,
        # Only web links become links: a feed's `javascript:` URL stays inert text.
        "href": item.url if _is_web_url(item.url) else None,
        "source_label": item.source_label,
        "date": when,
        # One string: an inline {% if %} at a line's end would eat the text part's newline.
        "meta": " · ".join(part for part in (item.source_label, item.author, when) if part),
        "summary": " ".join(summary.split()),
    }


def _is_web_url(url: str) -> bool:
    """An absolute http(s) URL with a host (what may go in an href)."""
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        return False
    return parsed.scheme in ("http", "https") and bool(parsed.host)


@functools.cache
def _templates() -> tuple[Template, Template]:
    """The HTML (autoescaped) and text templates, compiled once per process."""
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        # Only the HTML part is escaped: in the text part "&amp;" would be shown as is.
        autoescape=select_autoescape(enabled_extensions=("html", "html.j2"), default=False),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        auto_reload=False,
    )
    return env.get_template("newsletter.html.j2"), env.get_template("newsletter.txt.j2")


@functools.cache
def _inliner() -> css_inline.CSSInliner:
    """Moves the template's <style> rules into style attributes (mail clients drop <style>)."""
    # No remote stylesheets: rendering must not fetch anything.
    return css_inline.CSSInliner(keep_style_tags=False, load_remote_stylesheets=False)
