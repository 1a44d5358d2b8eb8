"""The plain-text part, written from the Markdown: wrapped, links numbered, tables aligned."""

from __future__ import annotations

import re

from mailer.content.markdown import EmailMarkdown
from mailer.content.plaintext import to_text
from mailer.content.post import load_post
from mailer.content.textwidth import display_width, is_wide, wrap
from tests.conftest import SAMPLE_POST

MAX_COLUMNS = 78
# A line may be longer only for an address that cannot be broken: alone, maybe numbered.
LONE_URL = re.compile(r"^[ >]*(?:\[\d+\] )?(?:- )?\S*://\S+$")
REF = re.compile(r"^\[(\d+)\] (\S+)$", re.MULTILINE)


def text_of(markdown: str) -> str:
    md = EmailMarkdown({})
    return to_text(md.parse(markdown, "https://blog.example.org/posts/p/"))


def unwrapped(text: str) -> str:
    """``text`` with each wrapped paragraph or item back on one line."""
    out: list[str] = []
    for line in text.split("\n"):
        body = line.lstrip(" ")
        continues = body and not re.match(r"(- |\d+\. |> |\[\^?\d+\] |[=-]{3})", body)
        if out and out[-1].strip() and continues:
            cjk = is_wide(out[-1][-1]) or is_wide(body[0])  # broken between characters
            out[-1] += ("" if cjk else " ") + body
        else:
            out.append(line)
    return "\n".join(out)


def assert_readable(text: str) -> None:
    """No line too wide but a lone URL, and every address in the list once, numbered 1…n."""
    for line in text.split("\n"):
        assert display_width(line) <= MAX_COLUMNS or LONE_URL.match(line), line
    refs = REF.findall(text)
    assert [int(n) for n, _ in refs] == list(range(1, len(refs) + 1))
    assert len({url for _, url in refs}) == len(refs)
    for number, _url in refs:
        assert re.search(rf"\S \[{number}\]", text), f"[{number}] is not after any link's text"


def test_headings_are_underlined_or_marked() -> None:
    assert text_of("# 标题\n\n## Section\n\n### Deeper\n\n#### Deepest\n") == (
        "标题\n====\n\nSection\n-------\n\n### Deeper\n\n#### Deepest"
    )


def test_lists_nest_and_number() -> None:
    text = text_of("- one\n- two\n  - two a\n  - two b\n\n1. first\n2. second\n")
    assert text == "- one\n- two\n  - two a\n  - two b\n\n1. first\n2. second"


def test_loose_list_items_are_separated_and_continue_indented() -> None:
    text = text_of("- **Head**  \n  Body line\n\n- Next\n")
    assert text == "- Head\n  Body line\n\n- Next"


def test_quotes_keep_their_marker_on_every_wrapped_line() -> None:
    text = text_of("Before\n\n> Quoted line\n> more " + "word " * 30 + "\n\nAfter\n")
    quote = text.split("\n\n")[1].split("\n")
    assert len(quote) == 3 and all(line.startswith("> ") for line in quote)
    assert quote[0].startswith("> Quoted line more word")


def test_links_are_numbered_once_each_and_listed_at_the_end() -> None:
    text = text_of(
        "See [the docs](../docs), [the same docs](../docs) and https://example.org/x and "
        "[https://example.org/y](https://example.org/y) or <mailto:me@example.org> or "
        "![a chart](c.png).\n"
    )
    assert text == (
        "See the docs [1], the same docs [1] and https://example.org/x and\n"
        "https://example.org/y or mailto:me@example.org or [a chart] [2].\n"
        "\n--------------------\n"
        "[1] https://blog.example.org/posts/docs\n"
        "[2] https://blog.example.org/posts/p/c.png"
    )


def test_strikethrough_stays_visible() -> None:
    assert text_of("Price: ~~$20~~ $10.\n") == "Price: ~~$20~~ $10."


def test_cjk_wraps_anywhere_but_never_inside_a_url() -> None:
    url = "https://example.org/" + "长路径" * 30
    text = text_of("这是一个很长的中文句子" * 12 + f" {url} 结束。\n")
    lines = text.split("\n")
    assert url in lines and all(display_width(line) <= 78 for line in lines if line != url)
    assert display_width(lines[0]) >= 72  # broken between characters, not at a space
    at = lines.index(url)
    assert "".join(lines[:at]) == "这是一个很长的中文句子" * 12 and lines[at + 1 :] == ["结束。"]


def test_a_url_in_capitals_is_a_url_too() -> None:
    url = "HTTPS://EXAMPLE.ORG/" + "长路径" * 30
    assert url in wrap("这是一个很长的中文句子" * 12 + f" {url} 结束。", 76)


def test_a_table_is_aligned_or_when_too_wide_a_list() -> None:
    text = text_of(
        "| Name | Mean | 数量 |\n|---|---:|---:|\n| alpha | 12.5 | 1234 |\n| 中文 | 3 | 5 |\n\n"
        "| Long header one here | Long header two here | Long header three here | Fourth one |\n"
        "|---|---|---|---|\n| a value of some length | b | c | d |\n"
    )
    assert text == (
        "Name   Mean  数量\n"
        "-----  ----  ----\n"
        "alpha  12.5  1234\n"
        "中文      3     5\n"
        "\n"
        "- Long header one here: a value of some length\n"
        "  Long header two here: b\n"
        "  Long header three here: c\n"
        "  Fourth one: d"
    )


def test_images_code_and_footnotes() -> None:
    text = text_of("```\ncode line\n```\n\nNote[^n].\n\n[^n]: Footnote text.\n")
    assert "    code line" in text
    assert "Note[^1]." in text
    assert "[^1] Footnote text." in text


def test_raw_html_becomes_its_text_without_scripts() -> None:
    text = text_of("<div>Hello <b>there</b><script>alert(1)</script></div>\n")
    assert text == "Hello there"


def test_the_sample_post_is_readable() -> None:
    text = text_of(load_post(SAMPLE_POST).body)
    assert_readable(text)
    assert len(REF.findall(text)) >= 10


def test_a_generated_post_with_everything_is_readable() -> None:
    sentence = "Rust 1.90 发布了新的借用检查器，编译速度提升了百分之二十五 and more words here. "
    links = " ".join(f"[项目 {n}](https://example.org/p/{n % 7})" for n in range(20))
    table = "| Crate | Downloads | Notes |\n|---|--:|---|\n" + "".join(
        f"| crate-{n} | {n * 12345} | {'很长的说明' * (n % 3)} |\n" for n in range(5)
    )
    nested = "- " + sentence * 2 + "\n  - " + sentence + links + "\n    1. " + sentence + "\n"
    body = (
        f"# 第 12 期\n\n{sentence * 4}\n\n{links}\n\n{table}\n{nested}\n"
        f'> {sentence * 3}\n\n```rust\nfn main() {{ println!("hi"); }}\n```\n\n'
        "### Deeper\n\nSee https://example.org/" + "a-very-long-path/" * 8 + "\n"
    )
    text = text_of(body)
    assert_readable(text)
    assert len(REF.findall(text)) == 7  # 20 links to 7 addresses
    assert "### Deeper" in text and "crate-4      49380" in text
