"""Click tokens can only ever lead to their own campaign's links; and the tracking helpers.

Over real HTTP against the live app (SQLite and PostgreSQL): two campaigns with different
link tables, and every way of bending a link — a changed MAC, reader or campaign, a
position past the table, a token of another purpose, a destination smuggled into the
path or query — ends on the app's 404 page, never a 500 and never a redirect anywhere
but the campaign's own link.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.edition import Edition, Link
from mailer.runtime import Runtime
from mailer.tokens import Purpose, Signer
from mailer.tracking.links import TRACK_PLACEHOLDER, is_machine_open, link_table, track
from tests.event_support import events_of, new_campaign, write_post
from tests.live_server import LiveServer, server_factory

start_server = server_factory()

A_LINKS = ["https://a.example/one"]
B_LINKS = ["https://b.example/first", "https://b.example/second", "https://b.example/third"]
LINK_INVALID = "The link is incomplete or has been changed."


@pytest.fixture
def server(start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server()


@pytest.fixture
def campaigns(server: LiveServer, tmp_path: Path) -> Iterator[tuple[int, int]]:
    """Campaign A (one link) and campaign B (three links) in the live server's database."""
    rt = Runtime(server.settings)
    try:
        a = new_campaign(rt, write_post(tmp_path, "edition-a", "Edition A", A_LINKS))
        b = new_campaign(rt, write_post(tmp_path, "edition-b", "Edition B", B_LINKS))
        yield a, b
    finally:
        rt.close()


@pytest.fixture
def signer(server: LiveServer) -> Signer:
    return Signer(server.settings.secret_keys)


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    # A fresh connection per request: a 500 would make uvicorn drop a kept-alive one.
    with httpx.Client(
        base_url=server.url, follow_redirects=False, timeout=15, headers={"connection": "close"}
    ) as session:
        yield session


def assert_not_found(response: httpx.Response) -> None:
    assert response.status_code == 404, (response.status_code, response.text[:300])
    assert "location" not in response.headers


def assert_link_invalid_page(response: httpx.Response) -> None:
    assert_not_found(response)
    assert response.headers["content-type"].startswith("text/html")
    assert LINK_INVALID in response.text


def assert_redirects_to(response: httpx.Response, url: str) -> None:
    assert response.status_code == 302, (response.status_code, response.text[:300])
    assert response.headers["location"] == url


def forge(token: str, index: int, value: str) -> str:
    parts = token.split(".")
    parts[index] = value
    return ".".join(parts)


# ---------------------------------------------------------------- genuine tokens


def test_a_token_leads_to_its_own_campaigns_link(
    client: httpx.Client, campaigns: tuple[int, int], signer: Signer
) -> None:
    a, b = campaigns
    assert_redirects_to(client.get(f"/c/{signer.sign_ids(Purpose.TRACK, a, 1)}/0"), A_LINKS[0])
    token = signer.sign_ids(Purpose.TRACK, b, 2)
    for position, url in enumerate(B_LINKS):
        assert_redirects_to(client.get(f"/c/{token}/{position}"), url)


def test_a_destination_in_the_url_does_not_matter(
    client: httpx.Client, campaigns: tuple[int, int], signer: Signer
) -> None:
    a, _ = campaigns
    link = f"/c/{signer.sign_ids(Purpose.TRACK, a, 1)}/0"
    for suffix in (
        "?url=https://evil.example",
        "?url=https%3A%2F%2Fevil.example%2F",
        "?next=//evil.example&redirect=https://evil.example",
        "?position=2&campaign=2",
    ):
        assert_redirects_to(client.get(f"{link}{suffix}"), A_LINKS[0])
    # A destination in the path is not a link at all.
    assert_not_found(client.get(f"{link}/https://evil.example"))
    assert_not_found(client.get(f"{link}%2Fhttps%3A%2F%2Fevil.example"))
    assert_not_found(client.get(link.replace("/0", "/https%3A%2F%2Fevil.example")))
    assert_not_found(client.get("/c/https%3A%2F%2Fevil.example"))
    assert_not_found(client.get(link.removesuffix("/0")))  # a token without a link


# ---------------------------------------------------------------- forged tokens


def test_forged_tokens_get_the_404_page(
    client: httpx.Client, campaigns: tuple[int, int], signer: Signer
) -> None:
    a, b = campaigns
    genuine = signer.sign_ids(Purpose.TRACK, a, 1)
    mac = genuine.rsplit(".", 1)[1]
    changed_mac = genuine[:-1] + ("A" if genuine[-1] != "A" else "B")
    forged = [
        changed_mac,
        forge(genuine, 0, str(b)),  # campaign B, A's MAC
        forge(genuine, 1, "2"),  # another reader
        f"{a}.1.",  # no MAC
        f"{a}.1",  # MAC-less ids
        f"{a}.1.0.{mac}",  # a third id
        f"{a}.1.{mac}.{mac}",
        f"0{a}.1.{mac}",  # the same number written otherwise
        f"{a}.01.{mac}",
        Signer(["another secret"]).sign_ids(Purpose.TRACK, a, 1),
    ]
    for token in forged:
        assert_link_invalid_page(client.get(f"/c/{token}/0"))
        assert_link_invalid_page(client.get(f"/o/{token}.gif"))
    for position in ("00", "-0", "+0", "0x0", "1e0", " 0", "0 ", "²", "9" * 40):
        assert_link_invalid_page(client.get(f"/c/{genuine}/{position}"))


@pytest.mark.parametrize(
    "token",
    [
        "x",
        "...",
        "1.2.3.4.5",
        "-1.-1.-1.abc",
        "9" * 40 + ".1.0.abc",
        "%C3%A9.1.0.abc",
        "%00",
        "1.2.3.%FF",
    ],
)
def test_junk_tokens_are_a_404_not_a_crash(client: httpx.Client, campaigns, token: str) -> None:
    assert_not_found(client.get(f"/c/{token}/0"))
    assert_not_found(client.get(f"/c/{token}"))
    assert_not_found(client.get(f"/o/{token}.gif"))


def test_a_token_of_campaign_a_never_reaches_bs_links(
    client: httpx.Client, campaigns: tuple[int, int], signer: Signer
) -> None:
    """A genuine token with a position past A's table is refused, though B has that link."""
    a, _ = campaigns
    token = signer.sign_ids(Purpose.TRACK, a, 1)
    for position in (1, 2, 99, 999_999):
        assert_link_invalid_page(client.get(f"/c/{token}/{position}"))
    # A campaign that does not exist has no links at all.
    assert_link_invalid_page(client.get(f"/c/{signer.sign_ids(Purpose.TRACK, 999, 1)}/0"))


def test_tokens_of_other_purposes_do_not_click(
    client: httpx.Client, campaigns: tuple[int, int], signer: Signer
) -> None:
    a, _ = campaigns
    for token in (
        signer.sign_ids(Purpose.UNSUBSCRIBE, a, 1),  # the right shape, the wrong purpose
        signer.sign_ids(Purpose.CONFIRM, a, 1),
        signer.sign_ids(Purpose.UNSUBSCRIBE, a),
    ):
        assert_link_invalid_page(client.get(f"/c/{token}/0"))
        assert_link_invalid_page(client.get(f"/o/{token}.gif"))


def test_nothing_bent_is_recorded_and_nothing_crashed(
    server: LiveServer, client: httpx.Client, campaigns: tuple[int, int], signer: Signer
) -> None:
    a, _ = campaigns
    genuine = signer.sign_ids(Purpose.TRACK, a, 1)
    assert_not_found(client.get(f"/c/{forge(genuine, 1, '2')}/0"))
    assert_not_found(client.get(f"/c/{genuine}/5"))
    assert client.get(f"/c/{genuine}/0").status_code == 302
    server.app.state.events.flush()
    rows = events_of(server.app.state.sessions)
    assert [(r.kind, r.campaign_id, r.position, r.detail) for r in rows] == [
        ("clicked", a, 0, {"url": A_LINKS[0]})
    ]
    assert [r for r in server.log if r.levelname in ("ERROR", "CRITICAL")] == []


# ---------------------------------------------------------------- track() and machine opens

HTML = (
    '<html><body><p><a href="https://example.org/a">A</a> '
    '<a href="https://example.org/a/longer">B</a> '
    '<a href="https://example.org/q?x=1&amp;y=2">Q</a> '
    '<a href="mailto:editor@example.org">mail us</a> '
    '<a href="https://example.org/a">A again</a></p>'
    '<p><a href="%%unsubscribe_url%%">Unsubscribe</a> '
    '<a href="%%view_url%%">View in browser</a></p></body></html>'
)
TEXT = (
    "A (https://example.org/a)\nB (https://example.org/a/longer)\n"
    "Q (https://example.org/q?x=1&y=2)\nmail us (mailto:editor@example.org)\n"
    "Bare https://example.org/a\n\n-- \nUnsubscribe: %%unsubscribe_url%%\n"
    "View in browser: %%view_url%%\n"
)
PUBLIC = "https://mail.example.org"


def edition(html: str = HTML, text: str = TEXT, links: tuple[Link, ...] | None = None) -> Edition:
    if links is None:
        links = (
            Link("https://example.org/a", "A"),
            Link("https://example.org/a/longer", "B"),
            Link("https://example.org/q?x=1&y=2", "Q"),
            Link("mailto:editor@example.org", "mail us"),
            Link("https://example.org/a", "A again"),
        )
    return Edition(
        slug="s", title="T", subject="T", preheader="", lang="en", post_url="", html=html,
        text=text, links=links,
    )  # fmt: skip


def test_link_table_holds_each_web_link_once_in_order() -> None:
    assert link_table(edition()) == [
        "https://example.org/a",
        "https://example.org/a/longer",
        "https://example.org/q?x=1&y=2",
    ]


def test_track_rewrites_links_in_html_and_text() -> None:
    html, text = track(edition(), link_table(edition()), PUBLIC)
    hrefs = re.findall(r'href="([^"]*)"', html)
    assert hrefs == [
        f"{PUBLIC}/c/%%t%%/0",
        f"{PUBLIC}/c/%%t%%/1",
        f"{PUBLIC}/c/%%t%%/2",
        "mailto:editor@example.org",
        f"{PUBLIC}/c/%%t%%/0",
        "%%unsubscribe_url%%",
        "%%view_url%%",
    ]
    assert text == (
        f"A ({PUBLIC}/c/%%t%%/0)\nB ({PUBLIC}/c/%%t%%/1)\n"
        f"Q ({PUBLIC}/c/%%t%%/2)\nmail us (mailto:editor@example.org)\n"
        f"Bare {PUBLIC}/c/%%t%%/0\n\n-- \nUnsubscribe: %%unsubscribe_url%%\n"
        "View in browser: %%view_url%%\n"
    )
    assert "example.org/a" not in text.replace("mail.example.org", "")


def test_track_adds_the_pixel_once_at_the_end() -> None:
    html, _ = track(edition(), link_table(edition()), PUBLIC)
    pixel = f'<img src="{PUBLIC}/o/{TRACK_PLACEHOLDER}.gif"'
    assert html.count(pixel) == 1
    assert html.count("/o/") == 1
    assert html.index(pixel) < html.index("</body>")
    assert 'width="1" height="1" alt=""' in html
    # Without links there is still the pixel, and nothing else changes.
    bare = edition(html="<html><body><p>Hi</p></body></html>", text="Hi\n", links=())
    html, text = track(bare, [], PUBLIC)
    assert html.count("/o/") == 1 and text == "Hi\n"


def test_track_leaves_the_edition_itself_alone() -> None:
    original = edition()
    track(original, link_table(original), PUBLIC)
    assert original.html == HTML and original.text == TEXT


def _rendered(tmp_path: Path, body: str) -> Edition:
    from mailer.config import load_settings

    path = tmp_path / "edge.md"
    path.write_text(f"---\ntitle: Edge weekly\nscheduled: 2026-02-06\n---\n{body}\n", "utf-8")
    settings = load_settings(site_url="https://blog.example.org", public_url=PUBLIC)
    return Renderer(settings).render(load_post(path))


def test_bare_links_before_punctuation_are_tracked_in_the_text_part_too(tmp_path: Path) -> None:
    """A post's bare URL that ends a sentence is tracked in HTML; the text part must match."""
    rendered = _rendered(
        tmp_path, "See https://example.org/bare. And https://example.org/comma, then more."
    )
    table = link_table(rendered)
    assert table == ["https://example.org/bare", "https://example.org/comma"]
    html, text = track(rendered, table, PUBLIC)
    assert f'href="{PUBLIC}/c/%%t%%/0"' in html and f'href="{PUBLIC}/c/%%t%%/1"' in html
    assert "https://example.org/bare" not in text, text
    assert "https://example.org/comma" not in text, text
    assert f"{PUBLIC}/c/%%t%%/0." in text and f"{PUBLIC}/c/%%t%%/1," in text


def test_a_link_with_an_apostrophe_is_tracked_in_html(tmp_path: Path) -> None:
    rendered = _rendered(tmp_path, "Read [the story](https://example.org/it's-here) today.")
    table = link_table(rendered)
    assert table == ["https://example.org/it's-here"]
    html, text = track(rendered, table, PUBLIC)
    assert f"{PUBLIC}/c/%%t%%/0" in text
    assert f'href="{PUBLIC}/c/%%t%%/0"' in html, re.findall(r'href="[^"]*"', html)


SAFARI_IOS = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.4 Mobile/15E148 Safari/604.1"
)
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 "
    "(KHTML, like Gecko) Chrome/124.0.0.0 Safari/537.36"
)
GMAIL_PROXY = (
    "Mozilla/5.0 (Windows NT 5.1; rv:11.0) Gecko Firefox/11.0 (via ggpht.com GoogleImageProxy)"
)


@pytest.mark.parametrize(
    ("ip", "agent", "machine"),
    [
        ("17.58.63.1", CHROME, True),  # Apple's network: Mail Privacy Protection
        ("17.0.0.1", "Mozilla/5.0", True),
        ("203.0.113.9", "Mozilla/5.0", True),  # MPP's bare agent from elsewhere
        ("203.0.113.9", "  Mozilla/5.0 ", True),
        ("203.0.113.9", "", True),
        ("203.0.113.9", "Mozilla/5.0 (compatible; Googlebot/2.1)", True),
        ("203.0.113.9", "Barracuda Sentinel (EE)", True),
        ("203.0.113.9", "Mimecast URL scanner", True),
        ("203.0.113.9", CHROME, False),
        ("198.51.100.4", SAFARI_IOS, False),
        ("66.249.84.1", GMAIL_PROXY, False),  # Gmail fetches when the reader opens
        ("18.0.0.1", CHROME, False),  # just outside Apple's 17/8
        ("170.0.0.1", CHROME, False),
        ("17.0.0.256", CHROME, False),  # no address: nothing is Apple's by its first digits
        ("017.0.0.1", CHROME, False),
        ("::ffff:17.0.0.1", CHROME, False),  # an IPv6 address, as ipaddress sees it
        ("2001:db8::1", CHROME, False),
        ("", CHROME, False),
        ("not an ip", CHROME, False),
    ],
)
def test_is_machine_open(ip: str, agent: str, machine: bool) -> None:
    assert is_machine_open(ip, agent) is machine
