"""Issue 10, "Close the public surface": what anyone on the internet can send the web app.

Over real HTTP against the live server (tests/live_server.py), on SQLite and PostgreSQL:
names bound for a mail header, the confirm link that mail scanners fetch, nested JSON,
forged X-Forwarded-For, the answer given before any database work, the stats pages'
token, the security headers of every answer, and the trailing-slash redirect. The archive
edition and the stats login are also opened in Chromium, to see that the CSP lets them
show (screenshots in tests/artifacts/).
"""

from __future__ import annotations

import base64
import html
import re
import threading
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import itsdangerous.timed
import pytest
from click.testing import CliRunner
from playwright.sync_api import Browser
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

import mailer.cli.serve
from mailer.cli import main
from mailer.config import load_settings
from mailer.runtime import Runtime
from mailer.sending.dispatch import InlineQueue, start
from mailer.tokens import Purpose, Signer
from subscribers import store
from subscribers.models import Status, Subscriber
from tests.conftest import ARTIFACTS
from tests.event_support import deliveries, new_campaign, seed, write_post
from tests.live_server import LiveServer, confirm_link, server_factory

start_server = server_factory()

STATS_TOKEN = "a-stats-token-for-the-surface-tests"
LINKS = ["https://example.org/story", "https://example.org/other"]
IMAGE_URL = "https://blog.example.org/chart.png"
# A 1×1 PNG, served by the browser test for IMAGE_URL.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)
FORM = "application/x-www-form-urlencoded"
CSRF_FIELD = re.compile(r'<input type="hidden" name="csrf" value="([^"]+)">')
# For probes that may crash today's app: uvicorn drops the connection after a 500.
CLOSE = {"connection": "close"}
NAME_INVALID = "Please write the name on one line, without control characters or “=?”."
NAME_TOO_LONG = "Please keep the name under 200 characters."
INVALID_REQUEST = "The request could not be read: send a flat JSON object of text and true/false."


@pytest.fixture
def server(start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server(stats_token=STATS_TOKEN)


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=15) as session:
        yield session


def settled(server: LiveServer) -> None:
    """Until the work the app does after answering (store, confirmation email) is done."""
    assert server.app.state.after_response.wait(), "the app is still working after answering"


def count_subscribers(server: LiveServer, sessions: sessionmaker) -> int:
    settled(server)
    with sessions() as session:
        return len(session.scalars(select(Subscriber.id)).all())


def find(sessions: sessionmaker, email: str) -> Subscriber | None:
    with sessions() as session:
        return store.find(session, email)


def open_form(client: httpx.Client) -> str:
    response = client.get("/subscribe")
    assert response.status_code == 200, response.text
    return CSRF_FIELD.findall(response.text)[0]


def title(response: httpx.Response) -> str:
    found = re.findall(r"<h1>(.*?)</h1>", response.text, re.S)
    assert len(found) == 1, response.text[:500]
    return html.unescape(found[0]).strip()


def answer(response: httpx.Response) -> tuple[int, Any]:
    """Status and JSON body (or the start of the text, when it is not JSON: a 500, say)."""
    if response.headers.get("content-type", "").startswith("application/json"):
        return response.status_code, response.json()
    return response.status_code, response.text[:200]


def sent_campaign(server: LiveServer, sessions: sessionmaker, folder: Path, slug: str) -> int:
    """A campaign with an image, sent to one reader through the live server's outbox: so
    it is in the archive."""
    seed(sessions, [f"{slug}@example.org"])
    post = write_post(folder, slug, slug.title(), LINKS)
    post.write_text(post.read_text("utf-8") + f"\n![A chart]({IMAGE_URL})\n", "utf-8")
    rt = Runtime(server.settings)
    try:
        campaign_id = new_campaign(rt, post)
        assert start(rt, campaign_id, InlineQueue(rt))
    finally:
        rt.close()
    return campaign_id


def bearer(token: str = STATS_TOKEN) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# --- 1. names bound for a mail header ---------------------------------------------------------

UNSAFE_NAMES = {
    "encoded word": "=?utf-8?q?Rita=0D=0ABcc:_everyone@example.org?=",
    "NUL": "Rita\x00Reader",
    "line feed": "Rita\nBcc: everyone@example.org",
    "carriage return": "Rita\rReader",
    "tab": "Rita\tReader",
    "DEL": "Rita\x7fReader",
    "C1 control (NEL)": "Rita\x85Reader",
    "line separator": "Rita\u2028Reader",
    "paragraph separator": "Rita\u2029Reader",
    "trailing line feed": "Rita Reader\n",
}


def test_unsafe_names_are_refused_by_the_api(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    answers = {}
    for n, (label, name) in enumerate(UNSAFE_NAMES.items()):
        body = {"email": f"name{n}@example.org", "name": name, "consent": True}
        answers[label] = answer(client.post("/subscribe", json=body, headers=CLOSE))
    refused = (422, {"error": "name_invalid", "message": NAME_INVALID})
    assert answers == dict.fromkeys(answers, refused)
    long = client.post(
        "/subscribe", json={"email": "long@example.org", "name": "x" * 201, "consent": True}
    )
    assert answer(long) == (422, {"error": "name_too_long", "message": NAME_TOO_LONG})
    assert count_subscribers(server, sessions) == 0
    assert server.mail() == []


def test_unsafe_names_are_refused_by_the_form(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    for n, (label, name) in enumerate(UNSAFE_NAMES.items()):
        csrf = open_form(client)
        fields = {"csrf": csrf, "email": f"form{n}@example.org", "name": name, "consent": "yes"}
        response = client.post("/subscribe", data=fields, headers=CLOSE)
        assert response.status_code == 400, (label, response.text[:300])
        assert title(response) == "Subscribe to The Weekly", label
        assert f'<p class="error" id="form-error" role="alert">{html.escape(NAME_INVALID)}</p>' in (
            response.text
        ), label
        name_input = re.search(r'<input type="text" id="name"[^>]*>', response.text)
        assert name_input is not None and 'aria-invalid="true"' in name_input.group(0), label
    assert count_subscribers(server, sessions) == 0
    assert server.mail() == []


# --- 2. a GET of the confirm link does not confirm ---------------------------------------------


def test_the_confirm_link_asks_and_only_its_button_confirms(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    assert client.post("/subscribe", json={"email": "ask@example.org", "consent": True}).is_success
    link = confirm_link(server, server.mail()[0])

    for _ in range(3):  # scanners and previews fetch every link, sometimes more than once
        page = client.get(link)
        assert page.status_code == 200, page.text[:300]
        assert title(page) == "Confirm your subscription"
        assert "Subscribe ask@example.org to The Weekly?" in html.unescape(page.text)
        assert re.search(
            r'<form method="post">\s*<button type="submit">Yes, subscribe me</button>', page.text
        ), page.text
        assert "<script" not in page.text, "no script may press the button"
        assert find(sessions, "ask@example.org").status == Status.PENDING  # type: ignore[union-attr]

    # The button: a plain POST to the same URL, from a browser that has no cookie of ours.
    with httpx.Client(timeout=15, follow_redirects=False) as fresh:
        done = fresh.post(link, content=b"", headers={"content-type": FORM})
    assert done.status_code == 200, done.text[:300]
    assert title(done) == "You are subscribed"
    assert find(sessions, "ask@example.org").status == Status.CONFIRMED  # type: ignore[union-attr]
    # Once confirmed, the link says so, and pressing again is fine.
    assert title(client.get(link)) == "You are subscribed"
    assert title(client.post(link)) == "You are subscribed"


def test_bad_and_expired_confirm_links_get_the_bad_link_page(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    with sessions.begin() as session:
        consent = store.Consent(source="test", text="test")
        pending = store.add(session, "pending@example.org", consent, status=Status.PENDING)
        subscriber_id = pending.subscriber.id  # type: ignore[union-attr]
    signer = Signer(server.settings.secret_keys)
    then = time.time() - 8 * 86400  # the link works for seven days
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(itsdangerous.timed, "time", types.SimpleNamespace(time=lambda: then))
        expired = signer.sign(Purpose.CONFIRM, subscriber_id)
    tokens = {
        "garbage": "not-a-token",
        "tampered": signer.sign(Purpose.CONFIRM, subscriber_id)[:-3] + "AAA",
        "no such subscriber": signer.sign(Purpose.CONFIRM, 987_654),
        "expired": expired,
    }
    answers = {}
    for label, token in tokens.items():
        got = client.get(f"/confirm/{token}", headers=CLOSE)
        posted = client.post(f"/confirm/{token}", headers=CLOSE)
        answers[label] = (got.status_code, posted.status_code)
        for response in (got, posted):
            if response.status_code == 400:
                assert title(response) == "This link does not work", label
    assert answers == dict.fromkeys(answers, (400, 400))
    assert find(sessions, "pending@example.org").status == Status.PENDING  # type: ignore[union-attr]


# --- 3. nested JSON ---------------------------------------------------------------------------


def test_nested_json_is_refused_cleanly(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    start = '{"email": "deep@example.org", "consent": true, "pad": '
    deep = {
        "arrays": start + "[" * 3000 + "]" * 3000 + "}",
        "objects": start + '{"":' * 1300 + "1" + "}" * 1300 + "}",
    }
    for label, body in deep.items():
        assert len(body) < 8 * 1024, "within the body limit: the depth is the problem"
        response = client.post(
            "/subscribe", content=body, headers={"content-type": "application/json", **CLOSE}
        )
        assert answer(response) == (
            400,
            {"error": "invalid_request", "message": INVALID_REQUEST},
        ), label

    # One level is enough to refuse: each field is text or true/false.
    shallow = {
        "name": ({"name": {"first": "Ada"}}, "name_invalid"),
        "email": ({"email": ["list@example.org"]}, "invalid_email"),
        "extra": ({"tags": ["a", "b"]}, "invalid_request"),
    }
    for label, (fields, key) in shallow.items():
        body = {"email": "flat@example.org", "consent": True, **fields}
        status, got = answer(client.post("/subscribe", json=body, headers=CLOSE))
        assert status in (400, 422) and isinstance(got, dict), (label, status, got)
        assert got["error"] == key, label
    assert count_subscribers(server, sessions) == 0


# --- 4. the client's address ------------------------------------------------------------------


def test_forwarded_for_is_stored_only_as_a_valid_address(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    """The live server believes X-Forwarded-For from loopback, as `mailer serve` behind a proxy
    on the same machine does: whatever the proxy passes on must not reach the database."""
    cases = {
        "x" * 300: "",
        "9" * 300: "",
        "fe80::1%" + "a" * 300: "fe80::1",
        "203.0.113.9": "203.0.113.9",
    }
    for n, (forwarded, stored) in enumerate(cases.items()):
        body = {"email": f"ip{n}@example.org", "consent": True}
        response = client.post("/subscribe", json=body, headers={"x-forwarded-for": forwarded})
        assert response.status_code == 202, response.text
        settled(server)
        subscriber = find(sessions, f"ip{n}@example.org")
        assert subscriber is not None, forwarded[:20]
        assert subscriber.consent_ip == stored


def test_no_proxy_is_trusted_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(mailer.cli.serve, "create_app", lambda settings: object())
    monkeypatch.setattr(mailer.cli.serve.uvicorn, "run", lambda app, **kw: calls.append(kw))
    assert load_settings().trusted_proxies == ""
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 0, result.output
    assert calls[-1]["proxy_headers"] is False, calls[-1]

    monkeypatch.setenv("MAILER_TRUSTED_PROXIES", "10.0.0.2")
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 0, result.output
    assert calls[-1]["proxy_headers"] is True
    assert calls[-1]["forwarded_allow_ips"] == "10.0.0.2"


# --- 5. the answer comes before the database work ---------------------------------------------


def test_the_answer_comes_before_any_database_work(
    server: LiveServer, sessions: sessionmaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A new and a known address must cost the same before the answer: nothing is written
    (or looked up) until the visitor has it, so the store is held shut while they ask."""
    seed(sessions, ["known@example.org"])
    gate = threading.Event()
    real_add = store.add

    def held_add(*args: Any, **kwargs: Any) -> Any:
        assert gate.wait(10), "the test never opened the gate"
        return real_add(*args, **kwargs)

    monkeypatch.setattr(store, "add", held_add)
    try:
        with httpx.Client(base_url=server.url, timeout=3) as client:
            for email in ("known@example.org", "new@example.org"):
                body = {"email": email, "consent": True}
                assert client.post("/subscribe", json=body).status_code == 202, email
            csrf = open_form(client)
            fields = {"csrf": csrf, "email": "form@example.org", "consent": "yes"}
            page = client.post("/subscribe", data=fields)
            assert page.status_code == 200 and title(page) == "Check your inbox"
        assert find(sessions, "new@example.org") is None, "written before the answer"
    finally:
        gate.set()
    settled(server)
    assert find(sessions, "new@example.org") is not None
    assert find(sessions, "form@example.org") is not None
    assert len(server.mail()) == 2  # the known (confirmed) address gets none


# --- 6. the stats pages -----------------------------------------------------------------------


@pytest.fixture
def campaign(server: LiveServer, sessions: sessionmaker, tmp_path: Path) -> int:
    return sent_campaign(server, sessions, tmp_path, "surface-weekly")


def test_stats_token_is_taken_from_a_header_not_the_query_string(
    server: LiveServer, campaign: int
) -> None:
    url = f"{server.url}/stats/{campaign}"
    in_query = httpx.get(f"{url}?token={STATS_TOKEN}")
    assert in_query.status_code == 401, "a token in the URL lands in access logs"
    assert "<svg" not in in_query.text
    assert httpx.get(url, headers=bearer("wrong")).status_code == 401
    page = httpx.get(url, headers=bearer())
    assert page.status_code == 200, page.text[:300]
    assert "<svg" in page.text and "Surface-Weekly" in page.text


def test_stats_login_form_sets_a_strict_http_only_cookie(
    start_server: Callable[..., LiveServer], server: LiveServer, campaign: int
) -> None:
    path = f"/stats/{campaign}"
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=15) as browser:
        login = browser.get(path)
        assert login.status_code == 401
        challenge = login.headers["www-authenticate"]
        assert challenge.startswith("Bearer "), "not Basic: no browser password prompt"
        assert re.search(r'<form method="post">', login.text), login.text
        assert re.search(r'<input type="password" id="token" name="token"', login.text)

        wrong = browser.post(path, data={"token": "wrong"})
        assert wrong.status_code == 401 and "set-cookie" not in wrong.headers
        assert 'role="alert"' in wrong.text

        signed_in = browser.post(path, data={"token": STATS_TOKEN})
        assert signed_in.status_code == 303, signed_in.text
        location = signed_in.headers["location"]
        assert location == str(campaign), "relative: never from the Host header"
        assert signed_in.url.join(location).path == path
        cookie = signed_in.headers["set-cookie"].lower()
        assert "httponly" in cookie and "samesite=strict" in cookie
        assert "secure" not in cookie, "public_url is http here"
        assert STATS_TOKEN not in signed_in.headers["set-cookie"], "not the token itself"

        page = browser.get(path)
        assert page.status_code == 200 and "<svg" in page.text

    # Behind an https:// public URL the cookie is only ever sent over https.
    public = start_server(stats_token=STATS_TOKEN, public_url="https://mail.example.org")
    signed_in = httpx.post(public.url + path, data={"token": STATS_TOKEN})
    assert signed_in.status_code == 303
    assert "secure" in signed_in.headers["set-cookie"].lower()


def test_failed_stats_attempts_are_limited_per_client(
    server: LiveServer, campaign: int, sessions: sessionmaker
) -> None:
    url = f"{server.url}/stats/{campaign}"
    codes = [httpx.get(url, headers=bearer(f"guess-{n}")).status_code for n in range(10)]
    assert codes == [401] * 10
    assert httpx.get(url, headers=bearer("guess-11")).status_code == 429
    assert httpx.get(url, headers=bearer()).status_code == 429, "no guess counts past the limit"
    assert httpx.post(url, data={"token": STATS_TOKEN}).status_code == 429
    # Another client (127.0.0.2 is loopback too) has its own allowance.
    other = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(transport=other, timeout=15) as neighbour:
        assert neighbour.get(url, headers=bearer()).status_code == 200


def test_stats_ids_out_of_range_are_not_found(server: LiveServer) -> None:
    for campaign_id in (10**30, 2**63, 0, -1):
        response = httpx.get(f"{server.url}/stats/{campaign_id}", headers={**bearer(), **CLOSE})
        assert response.status_code == 404, (campaign_id, response.text[:200])


# --- 7. security headers on every answer ------------------------------------------------------


def test_every_answer_carries_the_security_headers(
    server: LiveServer, client: httpx.Client, campaign: int, sessions: sessionmaker
) -> None:
    (delivery,) = deliveries(sessions, campaign).values()
    track = Signer(server.settings.secret_keys).sign_ids(Purpose.TRACK, campaign, delivery.id)
    csrf = open_form(client)
    responses = {
        "form": client.get("/subscribe"),
        "form refused": client.post("/subscribe", data={"csrf": csrf, "email": "x"}),
        "json accepted": client.post("/subscribe", json={"email": "h@x.org", "consent": True}),
        "json refused": client.post("/subscribe", json={"email": "nope", "consent": True}),
        "health": client.get("/healthz"),
        "archive": client.get("/archive"),
        "edition": client.get("/archive/surface-weekly"),
        "not found": client.get("/no-such-page"),
        "bad link": client.get("/confirm/not-a-token"),
        "pixel": client.get(f"/o/{track}.gif"),
        "click redirect": client.get(f"/c/{track}/0"),
        "stats login": client.get(f"/stats/{campaign}"),
        "stats redirect": client.post(f"/stats/{campaign}", data={"token": STATS_TOKEN}),
        "stats": client.get(f"/stats/{campaign}", headers=bearer()),
    }
    assert responses["click redirect"].status_code == 302
    assert responses["click redirect"].headers["location"] == LINKS[0]
    missing = {}
    for label, response in responses.items():
        headers = response.headers
        csp = headers.get("content-security-policy", "")
        problems = [
            name
            for name, ok in (
                ("nosniff", headers.get("x-content-type-options") == "nosniff"),
                ("frame-ancestors", "frame-ancestors 'none'" in csp),
                ("default-src", "default-src 'none'" in csp),
                ("referrer", headers.get("referrer-policy") == "no-referrer"),
            )
            if not ok
        ]
        if problems:
            missing[label] = (response.status_code, problems)
    assert missing == {}
    page_csp = responses["form"].headers["content-security-policy"]
    assert "form-action 'self'" in page_csp and "script-src" not in page_csp


def test_archive_edition_and_stats_login_show_under_the_csp_in_chromium(
    browser: Callable[[], Browser], server: LiveServer, campaign: int
) -> None:
    context = browser().new_context(viewport={"width": 375, "height": 800})
    page = context.new_page()
    # Hermetic: the server, and the edition's image as if from the blog; nothing else.
    page.route(lambda url: not url.startswith(server.url + "/"), lambda route: route.abort())
    page.route(IMAGE_URL, lambda route: route.fulfill(body=PNG, content_type="image/png"))
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text))
    try:
        page.goto(f"{server.url}/archive/surface-weekly", wait_until="load")
        assert page.locator("a", has_text="story 0").count() == 1
        # The edition's own <style> applies, and its image (from another site) shows.
        assert page.evaluate("document.styleSheets.length") > 0
        assert page.get_by_alt_text("A chart").evaluate("image => image.naturalWidth") == 1
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "archive-edition-375.png"), full_page=True)

        page.goto(f"{server.url}/stats/{campaign}", wait_until="load")
        page.get_by_label("Stats token").fill(STATS_TOKEN)
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_load_state("load")
        assert page.locator("svg").count() == 1, page.content()[:500]
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(243, 244, 246)", "the page's inline <style> applies"
        page.screenshot(path=str(ARTIFACTS / "stats-375.png"), full_page=True)
    finally:
        context.close()
    assert [text for text in refused if "Content Security Policy" in text] == []


# --- 8. the trailing-slash redirect -----------------------------------------------------------


def test_a_forged_host_header_never_makes_a_redirect(server: LiveServer) -> None:
    forged = {"host": "evil.example", **CLOSE}
    for method, path in (("GET", "/subscribe/"), ("POST", "/subscribe/"), ("GET", "/archive/")):
        response = httpx.request(method, server.url + path, headers=forged)
        location = response.headers.get("location", "")
        assert "evil.example" not in location, (method, path, location)
        assert location == "" or location.startswith("/"), location
