"""Posts from other generators: their front matter, titles, dates and stray control characters."""

from __future__ import annotations

import datetime as dt

import pytest

from mailer.content.lint import lint
from mailer.content.post import load_post
from mailer.content.preview import build_preview
from mailer.errors import PostError

BODY = "Hello readers.\n\n## Part one\n\nMore.\n"


def test_toml_front_matter_hugo_and_zola(write_post) -> None:
    post = load_post(
        write_post(
            '+++\ntitle = "Zola week"\ndate = 2026-02-06\ndescription = "A teaser"\n'
            'slug = "zola-week"\nlang = "en"\n\n[taxonomies]\ntags = ["rust", "web"]\n\n'
            '[extra]\ntitle = "not this one"\n+++\n' + BODY
        )
    )
    assert (post.title, post.slug, post.lang) == ("Zola week", "zola-week", "en")
    assert (post.date, post.preheader, post.tags) == (
        dt.date(2026, 2, 6),
        "A teaser",
        ("rust", "web"),
    )
    assert post.body.startswith("Hello readers.")
    assert post.body_line == 14


def test_toml_datetime_keeps_its_zone(write_post) -> None:
    post = load_post(
        write_post(
            '+++\ntitle = "T"\nscheduled = 2026-02-06T09:30:00+08:00\ntags = ["a"]\n+++\nB\n'
        )
    )
    assert post.scheduled == dt.datetime(
        2026, 2, 6, 9, 30, tzinfo=dt.timezone(dt.timedelta(hours=8))
    )
    assert post.tags == ("a",)


def test_json_front_matter(write_post) -> None:
    post = load_post(
        write_post(
            '{\n  "title": "JSON week",\n  "date": "2026-02-06",\n'
            '  "tags": ["a", "b"],\n  "params": {"x": 1}\n}\n\n' + BODY
        )
    )
    assert (post.title, post.date, post.tags) == ("JSON week", dt.date(2026, 2, 6), ("a", "b"))
    assert post.body.startswith("Hello readers.")
    assert post.body_line == 8


def test_pelican_metadata_block(write_post) -> None:
    post = load_post(
        write_post(
            "Title: My super title\nDate: 2010-12-03 10:20\nModified: 2010-12-05 19:30\n"
            "Category: Python\nTags: pelican, publishing\nSlug: my-super-post\n"
            "Authors: Alexis Metaireau, Conan Doyle\nSummary: Short version for index\n"
            "    and feeds\nLang: fr\n\n" + BODY
        )
    )
    assert (post.title, post.slug, post.lang) == ("My super title", "my-super-post", "fr")
    assert post.date == dt.date(2010, 12, 3)
    assert post.tags == ("pelican", "publishing")
    assert post.preheader == "Short version for index and feeds"
    assert post.body.startswith("Hello readers.")
    assert post.body_line == 12


def test_multimarkdown_keys_are_case_insensitive(write_post) -> None:
    post = load_post(write_post("title: Lower case\nTAGS: one\n\tand-two\n\n" + BODY))
    assert (post.title, post.tags) == ("Lower case", ("one and-two",))


@pytest.mark.parametrize(
    "text",
    [
        "Note: we are late this week.\n\n# The title\n\nBody.\n",
        "Note: one\nplain second line\n\n# The title\n\nBody.\n",
        "https://example.org is our site\n\n# The title\n\nBody.\n",
        "Note : spaced key\n\n# The title\n\nBody.\n",
    ],
)
def test_a_first_paragraph_with_a_colon_is_body(write_post, text) -> None:
    post = load_post(write_post(text))
    assert post.title == "The title"
    assert post.body.startswith(text.split("\n")[0])


def test_yaml_keys_are_case_insensitive(write_post) -> None:
    assert load_post(write_post("---\nTitle: Capital\n---\nBody\n")).title == "Capital"


def test_title_from_a_heading_after_an_intro_line(write_post) -> None:
    post = load_post(write_post("*Issue 12, by Ann*\n\n# The real title\n\nHello.\n\n## Two\n"))
    assert post.title == "The real title"
    assert "The real title" not in post.body
    assert post.body.startswith("*Issue 12, by Ann*")


def test_title_heading_line_numbers_stay_true(write_post, renderer) -> None:
    post = load_post(write_post("Intro.\n\n# Title\n\nA [bad](javascript:void(0)) link.\n"))
    assert post.title == "Title"
    assert [f.line for f in renderer.render(post).findings] == [5]


@pytest.mark.parametrize(
    "text",
    [
        "Intro.\n\n```\n# not a title\n```\n\nText.\n",
        "Intro.\n\n## A section\n\n# Too late\n\nText.\n",
        "    # indented code\n\nText.\n",
    ],
)
def test_no_title_from_code_or_after_the_first_section(write_post, text) -> None:
    with pytest.raises(PostError, match="no title"):
        load_post(write_post(text))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2020-12-2", dt.date(2020, 12, 2)),
        ("2020/12/02", dt.date(2020, 12, 2)),
        ("'2020-12-02 10:00'", dt.datetime(2020, 12, 2, 10, 0)),
        (
            "'2020-12-02T10:00:00+08:00'",
            dt.datetime(2020, 12, 2, 10, tzinfo=dt.timezone(dt.timedelta(hours=8))),
        ),
        ("2020-12-02T10:00:00Z", dt.datetime(2020, 12, 2, 10, tzinfo=dt.UTC)),
    ],
)
def test_tolerant_dates(write_post, value, expected) -> None:
    post = load_post(write_post(f"---\ntitle: T\ndate: {value}\nscheduled: {value}\n---\nB\n"))
    assert post.scheduled == expected
    assert post.date == (expected.date() if isinstance(expected, dt.datetime) else expected)


def test_pelican_date_with_zone(write_post) -> None:
    post = load_post(write_post("Title: T\nDate: 2020/12/2 10:00:00+08:00\n\nB\n"))
    assert post.date == dt.date(2020, 12, 2)


@pytest.mark.parametrize("value", ["next friday", "2020-13-40", "2020-12-02 25:00"])
def test_a_date_that_is_not_one_names_field_and_value(write_post, value) -> None:
    with pytest.raises(PostError, match=f"'scheduled' is not a date: '{value}'"):
        load_post(write_post(f"Title: T\nScheduled: {value}\n\nB\n"))


def test_control_characters_are_removed_and_reported(write_post, renderer, settings) -> None:
    post = load_post(
        write_post("---\ntitle: T\u0002itle\n---\nOne\x00 line.\n\nTwo \x85line\x7f.\n\ttab kept\n")
    )
    assert (post.title, post.control_lines) == ("Title", (2, 4, 6))
    assert post.body == "One line.\n\nTwo line.\n\ttab kept"
    edition = renderer.render(post)  # used to fail: "the templates made invalid MJML"
    found = [(f.code, f.severity, f.line) for f in lint(edition, settings, post=post)]
    assert found[:3] == [("control-character", "warning", line) for line in (2, 4, 6)]


def test_mailer_preview_reports_the_control_characters(write_post, settings) -> None:
    """What the author runs on Thursday night names each line it cleaned."""
    preview = build_preview(write_post("# Title\n\nOne\x02 line.\n"), settings)
    assert [(f.code, f.line) for f in preview.findings][:1] == [("control-character", 3)]


def test_windows_line_endings_are_not_control_characters(write_post) -> None:
    post = load_post(write_post("---\r\ntitle: T\r\n---\r\nOne.\r\n\r\nTwo.\r\n"))
    assert (post.title, post.body, post.control_lines) == ("T", "One.\n\nTwo.", ())


@pytest.mark.parametrize(
    ("content", "line", "words"),
    [
        (
            '+++\ntitle = "ok"\ndate = nope\n+++\nBody\n',
            3,
            "TOML front matter between +++ lines is malformed",
        ),
        ('\n+++\ntitle = "ok"\n+++\nBody\n+++\n[x\n', None, None),
        (
            '{\n  "title": "ok",\n  "date": "2026-02-06"\n  "x": 1\n}\nBody\n',
            4,
            "JSON front matter is malformed",
        ),
        ("Title: x\nDate: 2026-02-06\n\nNo title above.\n", None, None),
        (
            "Date: 2026-02-06\nTags: a\n\nJust text.\n",
            None,
            "metadata block found (Pelican style) but no title",
        ),
        ("+++\ndate = 2026-02-06\n+++\nJust text.\n", None, "TOML front matter found but no title"),
        ("---\ntitle: never closed\n\nBody\n", 1, "opened with '---' on line 1 but never closed"),
        (
            '+++\ntitle = "never closed"\n\nBody\n',
            1,
            "opened with '+++' on line 1 but never closed",
        ),
    ],
)
def test_errors_say_what_was_found(write_post, content, line, words) -> None:
    path = write_post(content)
    if words is None:  # loads fine
        load_post(path)
        return
    with pytest.raises(PostError) as caught:
        load_post(path)
    assert (caught.value.line, words in str(caught.value)) == (line, True), str(caught.value)


def test_a_post_starting_with_a_template_tag_is_not_json(write_post) -> None:
    post = load_post(write_post("{% include header.html %}\n\n# Title\n\nBody.\n"))
    assert post.title == "Title"
