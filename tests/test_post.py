"""Loading posts: the sample, the fallbacks, and one clear error for each kind of bad file."""

from __future__ import annotations

import datetime as dt

import pytest

from mailer.content.post import load_post
from mailer.errors import PostError
from tests.conftest import SAMPLE_POST


def test_sample_post_front_matter() -> None:
    post = load_post(SAMPLE_POST)
    assert post.title == "2026年2月第一周AI与科技动态周报"
    assert post.slug == "2026-02-06-ai-weekly"
    assert post.date == dt.date(2026, 2, 6)
    assert post.scheduled == dt.date(2026, 2, 6)
    assert post.tags == ("AI", "Jeremy")
    assert post.preheader is None  # 'description:' is present but empty
    assert post.body.startswith("本周AI领域依然精彩纷呈")
    assert post.body_line == 11


def test_front_matter_fields(write_post) -> None:
    path = write_post(
        "---\ntitle: Hello\nsubject: 'Weekly: hello'\npreheader: A short teaser\n"
        "slug: hello-world\nlang: en-GB\ntags: ai, python\n"
        "scheduled: 2026-03-06T09:30:00\ncanonical_url: https://blog.example.org/hello\n---\nBody.\n"
    )
    post = load_post(path)
    assert (post.title, post.subject, post.preheader) == (
        "Hello",
        "Weekly: hello",
        "A short teaser",
    )
    assert (post.slug, post.lang, post.tags) == ("hello-world", "en-GB", ("ai", "python"))
    assert post.scheduled == dt.datetime(2026, 3, 6, 9, 30)
    assert post.canonical_url == "https://blog.example.org/hello"


def test_title_from_first_heading_is_not_repeated(write_post) -> None:
    post = load_post(write_post("# My first issue\n\nHello readers.\n\n## Part two\n\nMore.\n"))
    assert post.title == "My first issue"
    assert "My first issue" not in post.body
    assert post.body.startswith("Hello readers.")
    assert post.slug == "post"


def test_byte_order_mark_is_accepted(write_post) -> None:
    post = load_post(write_post("\ufeff---\ntitle: BOM\n---\nBody\n".encode()))
    assert post.title == "BOM"


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        ("---\ntitle: ok\ntags: [a, b\n---\nBody\n", 3, "malformed YAML"),
        ("---\ntitle: ok\n  bad: indent\n---\nBody\n", 3, "malformed YAML"),
        (b"---\ntitle: ok\n---\nline two\ncaf\xe9\n", 5, "not UTF-8"),
        ("---\ntitle: Empty\n---\n\n   \n", None, "no body"),
        ("---\ndate: 2026-02-06\n---\nJust a paragraph, no heading.\n", None, "no title"),
        ("---\ntitle: ok\ndate: next friday\n---\nBody\n", None, "'date' is not a date"),
        ("---\ntitle: [a, list]\n---\nBody\n", None, "'title' must be text"),
        ("---\n- just\n- a list\n---\nBody\n", 2, "must be a mapping"),
    ],
)
def test_bad_posts_raise_one_clear_error(write_post, content, line, words) -> None:
    path = write_post(content)
    with pytest.raises(PostError) as caught:
        load_post(path)
    error = caught.value
    assert error.path == path
    assert error.line == line
    assert words in str(error)
    assert str(error).startswith(f"{path}:{line}: " if line else f"{path}: ")
    assert "\n" not in str(error)


def test_missing_file_is_a_post_error(tmp_path) -> None:
    with pytest.raises(PostError, match="cannot read the file"):
        load_post(tmp_path / "nope.md")


def test_blank_lines_before_front_matter_keep_yaml_line_numbers(write_post) -> None:
    path = write_post("\n\n---\ntitle: ok\ntags: [a, b\n---\nBody\n")
    with pytest.raises(PostError) as caught:
        load_post(path)
    assert caught.value.line == 5
