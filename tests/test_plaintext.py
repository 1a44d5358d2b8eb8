"""The plain-text part, written from the Markdown."""

from __future__ import annotations

from mailer.content.markdown import EmailMarkdown
from mailer.content.plaintext import to_text


def text_of(markdown: str) -> str:
    md = EmailMarkdown({})
    return to_text(md.parse(markdown, "https://blog.example.org/posts/p/"))


def test_headings_are_underlined_or_marked() -> None:
    assert text_of("# 标题\n\n## Section\n\n### Deeper\n") == (
        "标题\n====\n\nSection\n-------\n\n### Deeper"
    )


def test_lists_nest_and_number() -> None:
    text = text_of("- one\n- two\n  - two a\n  - two b\n\n1. first\n2. second\n")
    assert text == "- one\n- two\n  - two a\n  - two b\n\n1. first\n2. second"


def test_loose_list_items_are_separated_and_continue_indented() -> None:
    text = text_of("- **Head**  \n  Body line\n\n- Next\n")
    assert text == "- Head\n  Body line\n\n- Next"


def test_a_list_after_a_paragraph_starts_after_a_blank_line() -> None:
    assert text_of("Intro:\n- a\n- b\n") == "Intro:\n\n- a\n- b"


def test_quotes_keep_their_marker() -> None:
    assert text_of("Before\n\n> Quoted line\n> more\n\nAfter\n") == (
        "Before\n\n> Quoted line\n> more\n\nAfter"
    )


def test_every_link_is_written_out_once() -> None:
    text = text_of(
        "See [the docs](../docs) and https://example.org/x and "
        "[https://example.org/y](https://example.org/y) or <mailto:me@example.org>.\n"
    )
    assert text == (
        "See the docs (https://blog.example.org/posts/docs) and https://example.org/x and "
        "https://example.org/y or mailto:me@example.org."
    )


def test_images_code_tables_and_footnotes() -> None:
    text = text_of(
        "![Chart](c.png)\n\n```\ncode line\n```\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        "Note[^n].\n\n[^n]: Footnote text.\n"
    )
    assert "Chart (https://blog.example.org/posts/p/c.png)" in text
    assert "    code line" in text
    assert "a | b\n--------------------\n1 | 2" in text
    assert "Note[1]." in text
    assert "[1] Footnote text." in text


def test_raw_html_becomes_its_text_without_scripts() -> None:
    text = text_of("<div>Hello <b>there</b><script>alert(1)</script></div>\n")
    assert text == "Hello there"
