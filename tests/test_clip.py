"""Never clipped by Gmail: lean HTML, and a long post emailed shortened, continuing on the web."""

from __future__ import annotations

import json
import re
from urllib.parse import quote

from mailer.config import Settings
from mailer.content.lint import CLIP_LIMIT, lint
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.content.shorten import BUDGET, delivered_size
from mailer.edition import Edition
from tests.conftest import SAMPLE_POST

# The sample post's HTML before it was made lean (commit 791858f): 28,430 bytes.
SAMPLE_SIZE_BEFORE = 28_430
CONTINUE = re.compile(r'href="%%view_url%%#([^"]+)"')


def links_post(sections: int, links: int) -> str:
    """A links weekly: ``sections`` sections of ``links`` linked items each."""
    lines = ["---", "title: Links weekly", "lang: en", "---", "All the links of the week.", ""]
    for s in range(1, sections + 1):
        lines += [f"## Section {s}", ""]
        lines += [
            f"- [Link {s}.{i}: a title of some length](https://example.org/{s}/{i}/its-slug) — "
            "a line or two on why this one is worth a reader's time this week."
            for i in range(links)
        ]
        lines.append("")
    return "\n".join(lines)


def test_the_sample_is_at_least_15_percent_smaller(renderer: Renderer) -> None:
    assert renderer.render(load_post(SAMPLE_POST)).size <= SAMPLE_SIZE_BEFORE * 0.85


def test_a_long_post_is_emailed_up_to_a_section_and_continues_there_on_the_web(
    write_post, renderer: Renderer, settings: Settings
) -> None:
    edition = renderer.render(load_post(write_post(links_post(20, 20))))  # 400 links
    whole = delivered_size(edition.web_html, settings.public_url, edition.slug)
    assert delivered_size(edition.html, settings.public_url, edition.slug) <= BUDGET < whole
    assert edition.size < CLIP_LIMIT
    first_moved = edition.moved[0]
    assert first_moved.title == f"Section {21 - len(edition.moved)}"
    # The email ends with the last whole section it keeps, then the link to the first moved.
    (anchor,) = CONTINUE.findall(edition.html)
    assert anchor == quote(first_moved.anchor, safe="")
    last_kept = int(first_moved.title.split()[1]) - 1
    assert f"Link {last_kept}.19:" in edition.html and f">{first_moved.title}<" not in edition.html
    assert "Continue reading on the web" in edition.html
    # The web version has it all, the moved section's heading with the anchor's id.
    web = edition.for_web().html
    assert f'id="{first_moved.anchor}"' in web and "Link 20.19:" in web
    assert not CONTINUE.search(web)
    # The footer is inside the limit: unsubscribe link, why, view in browser.
    footer = edition.html[edition.html.index("Continue reading") :]
    assert "%%unsubscribe_url%%" in footer and "you subscribed to" in footer
    findings = {f.code: f for f in lint(edition, settings)}
    assert "clipped" not in findings and "relative-link" not in findings
    assert f"“{first_moved.title}”" in findings["shortened"].message


def test_one_huge_section_is_cut_between_list_items(write_post, renderer: Renderer) -> None:
    edition = renderer.render(load_post(write_post(links_post(1, 1200))))
    assert edition.size < BUDGET
    assert [m.title for m in edition.moved] == ["Section 1"]
    assert CONTINUE.findall(edition.html) == ["section-1"]
    kept = re.findall(r"Link 1\.(\d+):", edition.html)
    assert 100 < len(kept) < 1200 and kept == [str(i) for i in range(len(kept))]
    # One list, cut: the items kept are in one <ul>, closed before the link.
    assert edition.html.count("<ul") == 1


def test_a_post_that_fits_is_not_shortened(write_post, renderer: Renderer) -> None:
    edition = renderer.render(load_post(write_post(links_post(3, 20))))
    assert edition.moved == () and edition.web_html == ""
    assert not CONTINUE.search(edition.html)


def test_a_frozen_shortened_edition_keeps_its_web_version(write_post, renderer) -> None:
    edition = renderer.render(load_post(write_post(links_post(1, 1200))))
    frozen = Edition.from_dict(json.loads(json.dumps(edition.to_dict())))
    assert frozen == edition and frozen.moved[0].anchor == "section-1"
    assert frozen.for_web().html == edition.web_html


class CountingRenderer(Renderer):
    """A renderer that counts its MJML compiles, the costly stage of shortening."""

    compiles = 0

    def compile(self, mjml_source: str, made_for: object) -> str:
        self.compiles += 1
        return super().compile(mjml_source, made_for)


def test_shortening_compiles_the_email_few_times(write_post, settings: Settings) -> None:
    renderer = CountingRenderer(settings)
    edition = renderer.render(load_post(write_post(links_post(20, 20))))
    assert edition.moved
    # The whole email, the email without its body, and the cut its sizes point at: not a
    # search that compiles one candidate email after another.
    assert renderer.compiles <= 4
