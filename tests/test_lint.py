"""The linter: each thing that would hurt readers is found, and a clean edition has none."""

from __future__ import annotations

import dataclasses

import pytest

from mailer.config import Settings
from mailer.content.lint import CLIP_LIMIT, group_findings, lint
from mailer.content.post import load_post
from mailer.edition import Edition


@pytest.fixture
def clean(write_post, renderer) -> Edition:
    post = write_post(
        "---\ntitle: Fine\n---\nA [link](https://example.org).\n\n![Logo](https://cdn.example/logo.png)\n"
    )
    return renderer.render(load_post(post))


@pytest.fixture
def with_address(settings: Settings) -> Settings:
    return settings.model_copy(update={"postal_address": "1 Example Road, Springfield"})


def codes(edition: Edition, settings: Settings) -> dict[str, str]:
    return {f.code: f.severity for f in lint(edition, settings)}


def with_body(edition: Edition, html: str) -> Edition:
    return dataclasses.replace(edition, html=edition.html.replace("</body>", html + "</body>"))


def test_a_clean_edition_has_no_findings(clean, with_address) -> None:
    assert lint(clean, with_address) == []


def test_missing_postal_address_is_a_warning(clean, settings) -> None:
    assert codes(clean, settings) == {"no-postal-address": "warning"}


def test_over_the_clip_limit_is_an_error(clean, with_address) -> None:
    big = with_body(clean, "<p>" + "x" * CLIP_LIMIT + "</p>")
    assert codes(big, with_address) == {"clipped": "error"}
    near = with_body(clean, "<p>" + "x" * (CLIP_LIMIT - clean.size - 1000) + "</p>")
    assert codes(near, with_address) == {"near-clip": "warning"}


@pytest.mark.parametrize(
    ("html", "code", "severity"),
    [
        ('<a href="../relative">r</a>', "relative-link", "error"),
        ('<a href="javascript:alert(1)">j</a>', "unsafe-link", "error"),
        ('<img src="https://cdn.example/x.png">', "missing-alt", "error"),
        ('<img src="https://cdn.example/x.png" alt="  ">', "missing-alt", "error"),
        ('<img src="img/x.png" alt="x">', "relative-image", "error"),
        ('<img src="http://cdn.example/x.png" alt="x">', "http-image", "warning"),
        ('<img src="https://cdn.example/x.webp" alt="x">', "webp-image", "warning"),
        ('<img src="https://cdn.example/x.SVG?v=1" alt="x">', "svg-image", "error"),
    ],
)
def test_each_problem_in_the_html_is_found(clean, with_address, html, code, severity) -> None:
    assert codes(with_body(clean, html), with_address) == {code: severity}


def test_mailto_links_and_placeholders_are_fine(clean, with_address) -> None:
    assert lint(with_body(clean, '<a href="mailto:x@example.org">m</a>'), with_address) == []


def test_long_subject_and_missing_preheader(clean, with_address) -> None:
    edition = dataclasses.replace(clean, subject="本周" * 16, preheader="")
    assert codes(edition, with_address) == {
        "long-subject": "warning",
        "missing-preheader": "warning",
    }
    assert codes(dataclasses.replace(clean, subject="本周" * 15), with_address) == {}


def test_render_findings_come_first_with_their_line(write_post, renderer, with_address) -> None:
    post = write_post("# T\n\nA [bad](javascript:void(0)) link.\n")
    findings = lint(renderer.render(load_post(post)), with_address)
    assert [(f.code, f.line) for f in findings] == [("unsafe-link", 3)]
    assert str(findings[0]).startswith("error [unsafe-link] line 3: removed a javascript: link")


def test_findings_of_a_kind_are_one_line_with_their_count_and_lines(
    write_post, renderer, settings
) -> None:
    images = "\n\n".join(f"![](https://cdn.example/{n}.png)" for n in range(30))
    path = write_post(
        f"---\ntitle: T\n---\nIntro.\n\n{images}\n\n![ok](https://cdn.example/ok.png)\n"
    )
    post = load_post(path)
    groups = group_findings(lint(renderer.render(post), settings, post))
    assert [(g.code, len(g.findings)) for g in groups] == [
        ("missing-alt", 30),
        ("no-postal-address", 1),
    ]
    # The images are on lines 6, 8, …, 64 of the file; twelve are written out.
    assert groups[0].lines == list(range(6, 65, 2))
    assert str(groups[0]).startswith(
        "error [missing-alt] ×30: lines 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, … (18 more): "
        "first: an image without alt text (https://cdn.example/0.png)"
    )
