"""Rendering features one by one, on small posts written for each."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.content.templating import BUILTIN_TEMPLATES
from mailer.edition import Edition
from mailer.errors import TemplateError


def render(write_post, renderer: Renderer, text: str) -> Edition:
    return renderer.render(load_post(write_post(text)))


def test_raw_html_is_sanitized_and_each_removal_reported_with_its_line(write_post, renderer):
    edition = render(
        write_post,
        renderer,
        "---\ntitle: Raw\n---\nIntro paragraph.\n\n"
        '<div onclick="steal()">Kept text<script>alert("x")</script></div>\n\n'
        '<iframe src="https://evil.example/"></iframe>\n\n'
        '<form action="/x"><input name="q"></form>\n\n'
        'Text with <a href="javascript:alert(1)">a bad link</a> and '
        '<span style="color:red">red</span>.\n',
    )
    html = edition.html.lower()
    for gone in ("<script", "alert(", "onclick", "<iframe", "<form", "<input", "javascript:"):
        assert gone not in html
    assert "Kept text" in edition.html
    assert '<span style="color:red">red</span>' in edition.html
    found = {f.line: f.message for f in edition.findings if f.code == "raw-html"}
    assert "<script>" in found[6] and "onclick" in found[6]
    assert "<iframe>" in found[8]
    assert "<form>" in found[10] and "<input>" in found[10]
    assert "javascript: link" in found[12]
    assert "alert" not in edition.text and "steal" not in edition.text


def test_markdown_javascript_link_is_dropped_and_reported(write_post, renderer):
    edition = render(write_post, renderer, "# T\n\nClick [here](javascript:alert(1)) now.\n")
    assert "javascript" not in edition.html.lower()
    assert "here" in edition.html
    (finding,) = [f for f in edition.findings if f.code == "unsafe-link"]
    assert finding.severity == "error" and finding.line == 3


def test_relative_urls_resolve_against_the_post_url(write_post, renderer):
    edition = render(
        write_post,
        renderer,
        "---\ntitle: T\nslug: t\n---\n[up](../other) [root](/about) [frag](#notes)\n\n"
        "![A chart](img/chart.png)\n\n"
        '<p><a href="raw.html">raw</a> <img src="x.png" alt="x"></p>\n',
    )
    urls = [link.url for link in edition.links]
    assert urls == [
        "https://blog.example.org/posts/other",
        "https://blog.example.org/about",
        "https://blog.example.org/posts/t/#notes",
        "https://blog.example.org/posts/t/raw.html",
    ]
    assert [image.src for image in edition.images] == [
        "https://blog.example.org/posts/t/img/chart.png",
        "https://blog.example.org/posts/t/x.png",
    ]


def test_canonical_url_is_the_base_for_relative_links(write_post, renderer):
    edition = render(
        write_post,
        renderer,
        "---\ntitle: T\ncanonical_url: https://other.example/2026/t/\n---\n[next](next/)\n",
    )
    assert edition.links[0].url == "https://other.example/2026/t/next/"


def test_lone_image_becomes_a_responsive_image_block_with_alt(write_post, renderer):
    edition = render(
        write_post,
        renderer,
        "# T\n\nIntro.\n\n[![The team](https://cdn.example/team.jpg)](https://example.org/team)\n",
    )
    img = re.search(r"<img [^>]*src=\"https://cdn.example/team.jpg\"[^>]*>", edition.html)
    assert img is not None
    assert 'alt="The team"' in img.group(0)
    assert "width:100%" in img.group(0)  # mj-image scales down on narrow screens
    assert '<a href="https://example.org/team"' in edition.html
    assert edition.images[0].alt == "The team"


def test_tables_code_and_quotes_are_styled_inline(write_post, renderer):
    edition = render(
        write_post,
        renderer,
        "# T\n\n| Model | Score |\n|:--|--:|\n| A | 1 |\n\n"
        "```python\nprint('<b>')\n```\n\n> Quoted *words*\n",
    )
    html = edition.html
    assert re.search(r'<th style="[^"]*border:1px solid[^"]*text-align:left"', html)
    assert re.search(r'<td style="[^"]*text-align:right"', html)
    assert re.search(r'<pre style="[^"]*background-color:', html)
    assert "print(&#x27;&lt;b&gt;&#x27;)" in html or "print('&lt;b&gt;')" in html
    assert re.search(r'<blockquote style="[^"]*border-left:4px solid', html)


def test_footnotes_are_numbered_without_in_page_links(write_post, renderer):
    edition = render(write_post, renderer, "# T\n\nA claim.[^1]\n\n[^1]: The source.\n")
    assert "[1]</sup>" in edition.html
    assert 'href="#' not in edition.html
    assert "The source." in edition.html
    assert "A claim.[^1]" in edition.text and "[^1] The source." in edition.text


def test_strikethrough_and_linkify(write_post, renderer):
    edition = render(write_post, renderer, "# T\n\n~~old~~ see www.example.com today\n")
    assert "<s>old</s>" in edition.html or re.search(r"<s [^>]*>old</s>", edition.html)
    assert "http://www.example.com" in [link.url for link in edition.links]


def test_preheader_from_front_matter_is_padded(write_post, renderer):
    edition = render(
        write_post, renderer, "---\ntitle: T\npreheader: Read this first\n---\nBody.\n"
    )
    assert edition.preheader == "Read this first"
    hidden = re.search(r'<div style="display:none;[^"]*">(.*?)</div>', edition.html).group(1)
    assert hidden.startswith("Read this first&#847;&zwnj;&nbsp;")
    assert hidden.count("&zwnj;") >= 50


def test_preheader_from_a_long_first_paragraph_is_cut_cleanly(write_post, renderer):
    words = " ".join(["word"] * 60)
    edition = render(write_post, renderer, f"# T\n\nShort sentence here. {words}\n")
    assert edition.preheader == "Short sentence here." or edition.preheader.endswith("…")
    assert len(edition.preheader) <= 140


@pytest.mark.parametrize(
    ("body", "lang", "font"),
    [
        ("This week we shipped the new importer and fixed the scheduler. " * 3, "en", None),
        (
            "這個星期我們發布了新的版本，並且修正了排程器的問題。我們會繼續改進。" * 2,
            "zh-TW",
            "PingFang TC",
        ),
        (
            "本周我们发布了新的版本，并且修正了调度器的问题。我们会继续改进。" * 2,
            "zh-CN",
            "PingFang SC",
        ),
    ],
)
def test_language_is_detected_and_picks_the_font_stack(write_post, renderer, body, lang, font):
    edition = render(write_post, renderer, f"# T\n\n{body}\n")
    assert edition.lang == lang
    assert f'<html lang="{lang}"' in edition.html
    stack = re.search(r"font-family:([^;\"]+)", edition.html).group(1)
    assert stack.startswith("-apple-system")  # Latin fonts come first
    if font:
        assert font in stack


def test_front_matter_lang_wins_over_detection(write_post, renderer):
    edition = render(
        write_post,
        renderer,
        "---\ntitle: T\nlang: ja\n---\n本周我们发布了新的版本，并且修正了问题。\n",
    )
    assert edition.lang == "ja"


def test_dark_mode_meta_and_no_web_fonts_by_default(write_post, renderer):
    edition = render(write_post, renderer, "# T\n\nBody.\n")
    assert '<meta name="color-scheme" content="light dark"' in edition.html
    assert '<meta name="supported-color-schemes" content="light dark"' in edition.html
    assert "prefers-color-scheme: dark" in edition.html
    assert "fonts.googleapis.com" not in edition.html
    assert "<link" not in edition.html


def test_configured_web_font_is_linked(write_post, settings):
    url = "https://fonts.googleapis.com/css2?family=Noto+Sans+SC"
    update = {"font_url": url, "font_family": "Noto Sans SC"}
    renderer = Renderer(settings.model_copy(update=update))
    edition = render(write_post, renderer, "# T\n\nBody.\n")
    assert f'<link href="{url}"' in edition.html.replace("&amp;", "&")
    assert "font-family:'Noto Sans SC', -apple-system" in edition.html


def test_personalize_fills_and_escapes_the_reader_links(write_post, renderer):
    edition = render(write_post, renderer, "# T\n\nBody.\n")
    html, text = edition.personalize(
        unsubscribe_url="https://mail.example.org/u/abc?x=1&y=2", view_url="https://v.example/1"
    )
    assert 'href="https://mail.example.org/u/abc?x=1&amp;y=2"' in html
    assert "https://mail.example.org/u/abc?x=1&y=2" in text
    assert "%%" not in html and "%%" not in text


def test_edition_survives_a_round_trip_through_a_dict(write_post, renderer):
    edition = render(write_post, renderer, "# T\n\n[a](https://a.example) <b onclick=x>b</b>\n")
    assert Edition.from_dict(edition.to_dict()) == edition


def test_operator_templates_override_the_built_in_ones(write_post, settings, tmp_path):
    own = tmp_path / "own"
    (own / "email").mkdir(parents=True)
    layout = (BUILTIN_TEMPLATES / "email" / "newsletter.mjml").read_text("utf-8")
    (own / "email" / "newsletter.mjml").write_text(
        layout.replace("{{ strings.unsubscribe }}", "Leave this list"), "utf-8"
    )
    theme = (BUILTIN_TEMPLATES / "email" / "theme.toml").read_text("utf-8")
    (own / "email" / "theme.toml").write_text(theme.replace("#0b63c5", "#aa0000"), "utf-8")
    renderer = Renderer(settings.model_copy(update={"templates_dir": own}))
    edition = render(write_post, renderer, "# T\n\n[a](https://a.example)\n")
    assert "Leave this list" in edition.html
    assert "color:#aa0000" in edition.html
    assert "退订" not in edition.html


def test_broken_operator_template_names_the_file_and_line(write_post, settings, tmp_path):
    own = tmp_path / "own"
    (own / "email").mkdir(parents=True)
    (own / "email" / "newsletter.mjml").write_text("<mjml>\n{% if %}\n</mjml>\n", "utf-8")
    renderer = Renderer(settings.model_copy(update={"templates_dir": own}))
    with pytest.raises(TemplateError, match=r"newsletter\.mjml:2"):
        render(write_post, renderer, "# T\n\nBody.\n")


def test_missing_templates_folder_is_named(settings):
    with pytest.raises(TemplateError, match="MAILER_TEMPLATES_DIR"):
        Renderer(settings.model_copy(update={"templates_dir": Path("/nonexistent/templates")}))


def test_subject_from_front_matter(write_post, renderer):
    edition = render(write_post, renderer, "---\ntitle: Long title\nsubject: Short\n---\nBody.\n")
    assert (edition.title, edition.subject) == ("Long title", "Short")
    assert "<title>Short</title>" in edition.html
    assert dataclasses.replace(edition, subject="x").subject == "x"
