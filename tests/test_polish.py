"""Reader polish: masthead, brand colour, CJK spacing, linked code, a preheader not repeated."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from mailer.config import Settings, load_settings
from mailer.content.last_issue import last_sent_preheader
from mailer.content.lint import lint
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.errors import ConfigError
from mailer.store.ledger import Campaign, CampaignState
from mailer.web.pages import Pages

POST = "---\ntitle: T\n---\nThe opening line.\n\nSee [`my_func`](https://example.org/doc).\n"


def render(settings: Settings, write_post, text: str = POST, **update: object):
    return Renderer(settings.model_copy(update=update)).render(load_post(write_post(text)))


def test_the_accent_colour_is_the_links_and_must_be_rrggbb(settings, write_post) -> None:
    html = render(settings, write_post, accent_color="#aa3300").html
    (style,) = re.findall(r'<a href="https://example.org/doc" style="([^"]*)"', html)
    assert "color:#aa3300" in style and "background-color" not in style
    with pytest.raises(ConfigError, match=r"accent_color.*#rrggbb"):
        load_settings(accent_color="red")


def test_linked_code_is_underlined_below_its_underscores(settings, write_post) -> None:
    html = render(settings, write_post).html
    (style,) = re.findall(r'<a href="https://example.org/doc" style="([^"]*)"><code', html)
    assert "text-underline-offset" in style


def test_a_masthead_is_the_name_or_the_logo(settings, write_post) -> None:
    assert ">The Weekly</a></p>" not in render(settings, write_post).html
    assert ">The Weekly</a></p>" in render(settings, write_post, masthead=True).html
    logo = "https://cdn.example/logo.png"
    html = render(settings, write_post, logo_url=logo).html
    (tag,) = [t for t in re.findall(r"<img\b[^>]*>", html) if logo in t]
    assert 'alt="The Weekly"' in tag and 'width="200"' in tag
    with pytest.raises(ConfigError, match="logo_url"):
        load_settings(logo_url="http://cdn.example/logo.png")


def test_a_latin_name_is_spaced_from_cjk_text(settings, write_post, renderer) -> None:
    edition = render(settings, write_post, POST.replace("title: T", "title: T\nlang: zh"))
    assert "是因为您订阅了 The Weekly。" in edition.html and "订阅了 The Weekly。" in edition.text
    chinese = render(
        settings,
        write_post,
        POST.replace("title: T", "title: T\nlang: zh"),
        publication_name="周刊",
    )
    assert "是因为您订阅了周刊。" in chinese.html
    pages = Pages(renderer.templates, settings)
    assert pages.strings_for("zh")["subscribe_title"] == "订阅 The Weekly"


def test_lint_warns_when_the_preheader_is_last_issues(
    sessions, database_url, settings, write_post, renderer
) -> None:
    store = settings.model_copy(update={"database_url": database_url})
    assert last_sent_preheader(store, "new") is None  # nothing sent yet
    old = renderer.render(load_post(write_post(POST.replace("title: T", "title: Old"))))
    with sessions.begin() as session:
        session.add(
            Campaign(
                slug="old",
                subject="Old",
                edition=old.to_dict(),
                status=CampaignState.SENT,
                backend="outbox",
                started_at=dt.datetime(2026, 3, 2, tzinfo=dt.UTC),
            )
        )
    post = load_post(write_post(POST, "new.md"))
    edition = renderer.render(post)
    previous = last_sent_preheader(store, edition.slug)
    assert previous == old.preheader == edition.preheader
    (found,) = [f for f in lint(edition, settings, post, previous) if f.code == "same-preheader"]
    assert "'preheader:'" in found.message and "The opening line." in found.message
    own = load_post(write_post(POST.replace("title: T", "title: T\npreheader: New"), "own.md"))
    assert "same-preheader" not in {f.code for f in lint(renderer.render(own), settings, own)}


def test_without_a_database_there_is_nothing_to_compare(settings, tmp_path) -> None:
    missing = settings.model_copy(update={"database_url": f"sqlite:///{tmp_path / 'no.db'}"})
    assert last_sent_preheader(missing, "x") is None and not (tmp_path / "no.db").exists()
    down = settings.model_copy(update={"database_url": "postgresql://postgres@127.0.0.1:1/x"})
    assert last_sent_preheader(down, "x") is None
