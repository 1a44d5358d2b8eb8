"""The sample post's preview in a real headless Chromium, at phone and desktop widths.

Unit tests check the HTML we write; only a browser shows what a reader sees: whether the
page scrolls sideways on a phone, whether the title is on the first screen, whether the
dark-mode styles apply, whether a table cell breaks a word, how wide an image is.
Screenshots go to tests/artifacts/ (gitignored) for a human look.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import pytest
from playwright.sync_api import Browser, Page

from mailer.config import load_settings
from mailer.content.preview import build_preview, write_preview
from tests.conftest import ARTIFACTS, SAMPLE_POST
from tests.test_images import png

TITLE = "2026年2月第一周AI与科技动态周报"
SCREEN_HEIGHT = 800


@pytest.fixture
def preview_url(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    """The sample post's preview, written into the test's folder, with default settings."""
    for name in [name for name in os.environ if name.startswith("MAILER_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no local mailer.toml
    html_path, _ = write_preview(build_preview(SAMPLE_POST, load_settings()), tmp_path)
    return html_path.as_uri()


def open_page(
    browser: Browser, url: str, width: int, color_scheme: Literal["light", "dark"] = "light"
) -> Page:
    context = browser.new_context(
        viewport={"width": width, "height": SCREEN_HEIGHT}, color_scheme=color_scheme
    )
    page = context.new_page()
    # Hermetic: the preview must not need the network to lay out.
    page.route(re.compile(r"^(?!file:)"), lambda route: route.abort())
    page.goto(url, wait_until="load")
    return page


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file() and path.stat().st_size > 0
    return path


def luminance(css_colour: str) -> float:
    """Relative luminance (0 black … 1 white) of a computed ``rgb()``/``rgba()`` colour."""
    red, green, blue = (float(v) / 255 for v in re.findall(r"[\d.]+", css_colour)[:3])
    linear = [
        c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (red, green, blue)
    ]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


@pytest.mark.parametrize("width", [375, 600])
def test_preview_fits_the_screen(
    browser: Callable[[], Browser], preview_url: str, width: int
) -> None:
    page = open_page(browser(), preview_url, width)
    try:
        assert page.evaluate("document.documentElement.lang") == "zh-CN"
        scroll = page.evaluate(
            """() => [document.documentElement, document.body].map(
                   (el) => [el.scrollWidth, el.clientWidth])"""
        )
        for scroll_width, client_width in scroll:
            assert scroll_width <= client_width, f"horizontal scroll at {width}px: {scroll}"

        title = page.locator("h1", has_text=TITLE)
        assert title.is_visible()
        box = title.bounding_box()
        assert box is not None
        assert box["x"] >= 0 and box["x"] + box["width"] <= width, f"title outside: {box}"
        assert 0 <= box["y"] < SCREEN_HEIGHT, f"title not on the first screen: {box}"

        sticking_out = page.evaluate(
            """(width) => Array.from(document.querySelectorAll("body *"))
                   .filter((el) => el.getBoundingClientRect().right > width + 1)
                   .map((el) => [el.tagName, el.className, el.getBoundingClientRect().right])""",
            width,
        )
        assert sticking_out == [], f"past the right edge at {width}px: {sticking_out}"
    finally:
        screenshot(page, f"preview-{width}.png")
        page.context.close()


def test_preview_dark_mode(browser: Callable[[], Browser], preview_url: str) -> None:
    page = open_page(browser(), preview_url, 375, color_scheme="dark")
    try:
        assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
        wrapper = page.evaluate(
            """getComputedStyle(document.querySelector(".page") || document.body).backgroundColor"""
        )
        assert luminance(wrapper) < 0.05, f"page background not dark: {wrapper}"
        title = page.evaluate("getComputedStyle(document.querySelector('.post h1')).color")
        assert luminance(title) > 0.5, f"title text not light on dark: {title}"
    finally:
        screenshot(page, "preview-dark-375.png")
        page.context.close()


def _post_preview(tmp_path: Path, body: str) -> str:
    """A post of ``body``, previewed with default settings; its file URL."""
    post = tmp_path / "post.md"
    post.write_text("---\ntitle: Numbers\nlang: en\n---\n" + body, "utf-8")
    html_path, _ = write_preview(build_preview(post, load_settings()), tmp_path)
    return html_path.as_uri()


def test_preview_without_style_sheets(
    browser: Callable[[], Browser], preview_url: str, tmp_path: Path
) -> None:
    """Gmail's apps drop every <style> for other accounts' mail: the inline styles alone lay
    the page out."""
    path = Path(preview_url.removeprefix("file://"))
    bare = tmp_path / "bare.html"
    bare.write_text(re.sub(r"<style\b.*?</style>", "", path.read_text("utf-8"), flags=re.S))
    page = open_page(browser(), bare.as_uri(), 375)
    try:
        assert page.evaluate("document.querySelectorAll('style').length") == 0
        width = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert width[0] <= width[1], f"horizontal scroll without styles: {width}"
        family = page.evaluate("getComputedStyle(document.querySelector('.post li')).fontFamily")
        assert "PingFang SC" in family
    finally:
        screenshot(page, "preview-no-style-375.png")
        page.context.close()


TABLE = """| Metric | Mean | Total | Implementation |
| --- | ---: | ---: | --- |
| throughput | 12345 | 987654321 | internationalization |
| latency | 0.123456 | 1234567 | responsibilities |
"""


def test_table_cells_break_no_word_at_320(browser: Callable[[], Browser], tmp_path: Path) -> None:
    page = open_page(browser(), _post_preview(tmp_path, TABLE), 320)
    try:
        broken = page.evaluate(
            """() => {
                const broken = [];
                for (const cell of document.querySelectorAll(".post td, .post th")) {
                    const text = cell.firstChild;
                    for (const word of text.data.matchAll(/\\S+/g)) {
                        const range = document.createRange();
                        range.setStart(text, word.index);
                        range.setEnd(text, word.index + word[0].length);
                        if (range.getClientRects().length !== 1) broken.push(word[0]);
                    }
                }
                return broken;
            }"""
        )
        assert broken == []
        cells = page.evaluate("[...document.querySelectorAll('.post td')].map(c => c.innerText)")
        assert "internationalization" in cells and "987654321" in cells
        width = page.evaluate("[document.documentElement.scrollWidth, innerWidth]")
        assert width[0] <= width[1], f"the page scrolls sideways: {width}"
    finally:
        screenshot(page, "table-320.png")
        page.context.close()


@pytest.mark.parametrize("width", [320, 600])
def test_a_240px_image_is_240px_wide(
    browser: Callable[[], Browser], tmp_path: Path, width: int
) -> None:
    qr = png(600, 600)
    (tmp_path / "qr.png").write_bytes(qr)
    url = _post_preview(tmp_path, "Scan it:\n\n![QR code](qr.png){width=240}\n\nThanks.\n")
    page = open_page(browser(), url, width)
    try:
        page.unroute(re.compile(r"^(?!file:)"))
        page.route(re.compile(r"^https?://.*/qr\.png$"), lambda route: route.fulfill(body=qr))
        page.reload(wait_until="load")
        image = page.locator("img[alt='QR code']")
        assert page.evaluate("document.querySelector(\"img[alt='QR code']\").naturalWidth") == 600
        box = image.bounding_box()
        assert box is not None and round(box["width"]) == 240, box
    finally:
        screenshot(page, f"image-240-{width}.png")
        page.context.close()
