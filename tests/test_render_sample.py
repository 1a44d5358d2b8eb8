"""The real weekly post, rendered: nothing of the Markdown is lost, every link works."""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import pytest

from mailer.config import Settings
from mailer.content.lint import CLIP_LIMIT
from mailer.content.post import load_post
from mailer.content.preview import build_preview
from mailer.content.render import Renderer
from mailer.edition import Edition
from tests.conftest import SAMPLE_POST
from tests.test_plaintext import unwrapped

MARKDOWN = SAMPLE_POST.read_text("utf-8").split("---\n", 2)[2]
POST_URL = "https://blog.example.org/posts/2026-02-06-ai-weekly/"
LINK = re.compile(r"\[([^\]]+)\]\(([^)]+)\)")


def _plain(markdown: str) -> str:
    """Markdown inline syntax reduced to the words a reader sees."""
    text = LINK.sub(r"\1", markdown)
    return text.replace("**", "").strip()


HEADINGS = [_plain(h) for h in re.findall(r"^#{1,6} (.+)$", MARKDOWN, re.MULTILINE)]
LIST_ITEMS = [_plain(i) for i in re.findall(r"^\s*- (.+)$", MARKDOWN, re.MULTILINE)]
BOLD = re.findall(r"\*\*(.+?)\*\*", MARKDOWN)
LINKS = [(text, urljoin(POST_URL, url)) for text, url in LINK.findall(MARKDOWN)]


class _Page(HTMLParser):
    """The visible text of a page, and its links and image sources."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.words: list[str] = []
        self.links: list[tuple[str, str]] = []
        self.sources: list[str] = []
        self.tags: list[str] = []
        self._open_link: tuple[str, int] | None = None
        self._skip = 0
        self.feed(html)
        self.text = "".join(self.words)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        values = dict(attrs)
        if tag in ("style", "title", "script"):
            self._skip += 1
        if tag == "a" and values.get("href"):
            self._open_link = (str(values["href"]), len(self.words))
        if values.get("src"):
            self.sources.append(str(values["src"]))
        if tag != "a" and values.get("href"):  # <link href>
            self.sources.append(str(values["href"]))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("style", "title", "script"):
            self._skip -= 1
        if tag == "a" and self._open_link:
            href, start = self._open_link
            self.links.append((href, "".join(self.words[start:]).strip()))
            self._open_link = None

    def handle_data(self, data: str) -> None:
        if not self._skip:
            self.words.append(data)


@pytest.fixture(scope="module")
def edition() -> Edition:
    settings = Settings(site_url="https://blog.example.org", public_url="https://mail.example.org")
    return Renderer(settings).render(load_post(SAMPLE_POST))


@pytest.fixture(scope="module")
def page(edition: Edition) -> _Page:
    return _Page(edition.html)


def test_the_sample_has_what_these_tests_look_for() -> None:
    assert len(HEADINGS) == 13
    assert len(LIST_ITEMS) == 27
    assert len(BOLD) == 14
    assert len(LINKS) == 12


@pytest.mark.parametrize("heading", HEADINGS)
def test_every_heading_is_in_html_and_text(edition: Edition, page: _Page, heading: str) -> None:
    assert heading in page.text
    assert heading in edition.text


@pytest.mark.parametrize("item", LIST_ITEMS)
def test_every_list_item_is_in_html_and_text(edition: Edition, page: _Page, item: str) -> None:
    assert item in page.text
    assert f"- {item}" in unwrapped(edition.text)


@pytest.mark.parametrize("phrase", BOLD)
def test_every_bold_phrase_is_bold_in_html_and_present_in_text(
    edition: Edition, phrase: str
) -> None:
    assert re.search(r"<strong[^>]*>" + re.escape(phrase) + "</strong>", edition.html)
    assert phrase in edition.text


@pytest.mark.parametrize(("text", "url"), LINKS)
def test_every_link_is_in_html_and_written_out_in_text(
    edition: Edition, page: _Page, text: str, url: str
) -> None:
    assert (url, text) in page.links
    number = re.search(rf"^\[(\d+)\] {re.escape(url)}$", edition.text, re.MULTILINE)
    assert number and f"{text} [{number[1]}]" in unwrapped(edition.text)
    assert url in [link.url for link in edition.links]


def test_relative_link_resolves_against_the_posts_own_url(edition: Edition) -> None:
    urls = [link.url for link in edition.links]
    assert "https://blog.example.org/posts/weekly_news/news_2026_06" in urls


def test_every_href_and_src_of_the_preview_is_absolute() -> None:
    settings = Settings(site_url="https://blog.example.org", public_url="https://mail.example.org")
    preview = build_preview(SAMPLE_POST, settings)
    page = _Page(preview.html)
    urls = [href for href, _ in page.links] + page.sources
    assert len(urls) > len(LINKS)
    for url in urls:
        parts = urlsplit(url)
        assert parts.scheme in ("https", "http") and parts.netloc, url
    assert "%%" not in preview.html and "%%" not in preview.text


def test_language_subject_and_preheader(edition: Edition) -> None:
    assert edition.lang == "zh-CN"
    assert re.search(r'<html lang="zh-CN"', edition.html)
    assert 'role="article" lang="zh-CN"' in edition.html
    assert edition.subject == "2026年2月第一周AI与科技动态周报"
    assert f"<title>{edition.subject}</title>" in edition.html
    assert edition.preheader.startswith("本周AI领域依然精彩纷呈")
    assert len(edition.preheader) < len(MARKDOWN.split("\n\n")[0])


def test_no_script_and_under_the_clip_limit(edition: Edition, page: _Page) -> None:
    assert "script" not in page.tags
    assert "<script" not in edition.html.lower()
    assert edition.size == len(edition.html.encode())
    assert edition.size < CLIP_LIMIT


def test_footer_has_the_placeholders_the_send_fills(edition: Edition) -> None:
    assert edition.html.count("%%unsubscribe_url%%") == 1
    assert edition.html.count("%%view_url%%") == 2
    assert "%%unsubscribe_url%%" in edition.text and "%%view_url%%" in edition.text
    assert "您收到这封邮件，是因为您订阅了" in unescape(edition.html)


def test_dividers_for_each_horizontal_rule(edition: Edition) -> None:
    rules = len(re.findall(r"^---$", MARKDOWN, re.MULTILINE))
    assert edition.html.count('<p style="border-top:solid 1px') == rules
