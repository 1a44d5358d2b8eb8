"""The public web app over real HTTP: a real uvicorn server, real requests, SQLite and PostgreSQL.

Nothing of the app is replaced: ``create_app`` runs in uvicorn on a loopback port
(tests/live_server.py), requests go through ``httpx`` over TCP, mail lands in the outbox
folder as ``.eml`` files and is read back with the stdlib ``email`` package, and the
database is checked through an engine of the test's own. The reader's loop is followed end
to end: form → check-inbox page → confirmation email → confirm page and its button →
unsubscribe page → RFC 8058 one-click POST → suppressed → a second sign-up is answered alike
but refused. The app answers a sign-up before it stores it: ``settled`` waits for that work.
"""

from __future__ import annotations

import contextlib
import html
import json
import re
import secrets
import socket
import threading
import time
import types
from collections.abc import Callable, Iterator

import httpx
import itsdangerous.timed
import pytest
import redis
import uvicorn
from sqlalchemy import select
from sqlalchemy.orm import sessionmaker

from mailer.config import Settings
from mailer.runtime import Runtime
from mailer.tokens import Purpose, Signer
from mailer.web import create_app, guards
from subscribers import store
from subscribers.models import Activity, Status, Subscriber
from testkit.redis_db import redis_url
from tests.live_server import LiveServer, confirm_link, server_factory, text_part

start_server = server_factory()

CSRF_COOKIE = "mailer_csrf"
CSRF_FIELD = re.compile(r'<input type="hidden" name="csrf" value="([^"]+)">')
FORM = "application/x-www-form-urlencoded"
ONE_CLICK = b"List-Unsubscribe=One-Click"
CONSENT_TEXT = "I agree to receive The Weekly by email and know that I can unsubscribe at any time."
CHECK_INBOX = (
    "If {email} can receive our email, a message with a confirmation link is on its way. "
    "Follow it to complete your subscription."
)
LINK_INVALID = "The link is incomplete or has been changed."
LINK_EXPIRED = "The link has expired."
REDIS_URL = redis_url()
# For probes that may crash the app: uvicorn drops the connection after a 500, and a
# kept-alive connection would turn the next request's answer into a protocol error.
CLOSE = {"connection": "close"}


@pytest.fixture
def server(start_server: Callable[..., LiveServer]) -> LiveServer:
    return start_server()


@pytest.fixture
def client(server: LiveServer) -> Iterator[httpx.Client]:
    """A reader's browser session: it keeps cookies and never follows redirects by itself."""
    with httpx.Client(base_url=server.url, follow_redirects=False, timeout=15) as session:
        yield session


# --- helpers -------------------------------------------------------------------------------


def open_form(client: httpx.Client) -> str:
    """GET /subscribe; the CSRF token of its hidden field, which must equal the cookie's."""
    response = client.get("/subscribe")
    assert response.status_code == 200, response.text
    found = CSRF_FIELD.findall(response.text)
    assert len(found) == 1, "one hidden csrf field"
    assert client.cookies.get(CSRF_COOKIE) == found[0], "the csrf field must match its cookie"
    return found[0]


def submit_form(client: httpx.Client, csrf: str | None, **fields: str) -> httpx.Response:
    data = dict(fields)
    if csrf is not None:
        data["csrf"] = csrf
    return client.post("/subscribe", data=data)


def page_title(response: httpx.Response) -> str:
    found = re.findall(r"<h1>(.*?)</h1>", response.text, re.S)
    assert len(found) == 1, response.text
    return html.unescape(found[0]).strip()


def page_text(response: httpx.Response) -> str:
    """The visible words of a page, tags dropped and entities decoded."""
    body = response.text.split("<body>", 1)[-1]
    return html.unescape(re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", body))).strip()


def assert_html_page(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("text/html")
    assert re.search(r'<html lang="en">', response.text), "the page must say its language"


def settled(server: LiveServer) -> None:
    """Until the work the app does after answering (store, confirmation email) is done."""
    assert server.app.state.after_response.wait(), "the app is still working after answering"


def find(sessions: sessionmaker, email: str) -> Subscriber | None:
    with sessions() as session:
        return store.find(session, email)


def count_subscribers(sessions: sessionmaker) -> int:
    with sessions() as session:
        return len(session.scalars(select(Subscriber.id)).all())


def activity(sessions: sessionmaker, kind: str) -> list[Activity]:
    with sessions() as session:
        return list(session.scalars(select(Activity).where(Activity.kind == kind)))


def one_click(server: LiveServer, url: str) -> httpx.Response:
    """What a mail provider sends for RFC 8058: a cookieless POST, no redirects followed."""
    with httpx.Client(follow_redirects=False, timeout=15) as provider:
        response = provider.post(url, content=ONE_CLICK, headers={"content-type": FORM})
    assert "cookie" not in response.request.headers
    return response


def sign(server: LiveServer, purpose: Purpose, payload: object, age: float = 0) -> str:
    """A token signed with the server's secrets, ``age`` seconds old."""
    signer = Signer(server.settings.secret_keys)
    if not age:
        return signer.sign(purpose, payload)
    then = time.time() - age
    with pytest.MonkeyPatch.context() as patch:  # itsdangerous stamps tokens with time.time()
        patch.setattr(itsdangerous.timed, "time", types.SimpleNamespace(time=lambda: then))
        return signer.sign(purpose, payload)


def token_of(url: str) -> str:
    return url.rsplit("/", 1)[1]


def subscribe_json(client: httpx.Client, **body: object) -> httpx.Response:
    return client.post("/subscribe", json=body)


# --- health and pages ----------------------------------------------------------------------


def test_healthz(client: httpx.Client) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_the_app_takes_its_parts_from_the_runtime(settings: Settings, database_url: str) -> None:
    """Parts are built in one place: the app shares the Runtime's store, signer and opt-in,
    whose confirmation email goes through the Runtime's backend."""
    rt = Runtime(settings.model_copy(update={"database_url": database_url}))
    app = create_app(rt)
    assert app.state.sessions is rt.sessions and app.state.signer is rt.signer
    assert app.state.optin is rt.optin and rt.optin.send.backend is rt.backend
    rt.close()


def test_uvicorn_factory_serves_the_app_from_the_environment(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`uvicorn --factory mailer.web:from_environment`, as any ASGI server would run it."""
    monkeypatch.setenv("MAILER_DATABASE_URL", database_url)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config("mailer.web:from_environment", factory=True, log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        for _ in range(1000):
            if server.started or not thread.is_alive():
                break
            time.sleep(0.01)
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/healthz"
        assert httpx.get(url).json() == {"status": "ok"}
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()


def test_subscribe_form_is_labelled_and_carries_a_csrf_token(client: httpx.Client) -> None:
    response = client.get("/subscribe")
    assert_html_page(response, 200)
    page = response.text
    assert page_title(response) == "Subscribe to The Weekly"
    # Every visible field has a label tied to it by id.
    assert '<label for="email">' in page and re.search(r'<input type="email" id="email"', page)
    assert '<label for="name">' in page and re.search(r'<input type="text" id="name"', page)
    assert re.search(r'<input type="checkbox" name="consent" value="yes"', page)
    assert CONSENT_TEXT in page_text(response)
    # The honeypot is there for bots, hidden from people and from assistive technology.
    assert re.search(r'<div class="trap" aria-hidden="true">', page)
    assert re.search(r'name="website" tabindex="-1"', page)
    # The CSRF cookie: the same token as the form, not readable by scripts, same-site only.
    token = CSRF_FIELD.findall(page)[0]
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{CSRF_COOKIE}={token};")
    assert "httponly" in cookie.lower() and "samesite=strict" in cookie.lower()
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"
    # A second visit keeps the token the browser already holds.
    assert open_form(client) == token


def test_pages_speak_the_publication_language(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server(lang="zh")
    with httpx.Client(base_url=server.url, timeout=15) as client:
        form = client.get("/subscribe", headers=CLOSE)
        bad = client.get("/confirm/not-a-token")
    assert form.status_code == 200, form.text[:300]
    assert '<html lang="zh">' in form.text
    assert '<label for="email">邮箱地址</label>' in form.text
    assert bad.status_code == 400
    assert '<html lang="zh">' in bad.text and "链接无效" in bad.text


def test_pages_link_under_the_path_of_the_public_url(
    start_server: Callable[..., LiveServer],
) -> None:
    """Served under a path by a proxy that takes the prefix off (MAILER_PUBLIC_URL
    https://example.org/newsletter), the pages' links and the form stay under that path,
    where the proxy sends them back to the app, and so do the stats redirect and cookie."""
    token = "s3cret-stats-token-for-tests"
    server = start_server(public_url="http://127.0.0.1:9/newsletter", stats_token=token)
    with httpx.Client(base_url=server.url, timeout=15) as client:
        form = client.get("/subscribe")
        archive = client.get("/archive")
        signed_in = client.post("/stats/1", data={"token": token})
    assert '<form method="post" action="/newsletter/subscribe"' in form.text
    assert '<a href="/newsletter/archive">' in form.text  # the footer, on every page
    assert 'href="/newsletter/feed.xml"' in archive.text
    assert '<a href="/newsletter/subscribe">' in archive.text
    assert not re.search(r'(href|action|src)="/(?!newsletter/)', form.text + archive.text)
    # Relative, and the cookie's path left to the browser (the page's folder): right both
    # through the proxy (/newsletter/stats/1) and on the app's own address (/stats/1).
    assert signed_in.status_code == 303
    assert signed_in.headers["location"] == "1"
    assert "path=" not in signed_in.headers["set-cookie"].lower()


# --- the whole opt-in loop -----------------------------------------------------------------


def test_whole_opt_in_loop_over_http(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    address = "Reader@Example.org"
    # 1. The form, then the form submitted.
    csrf = open_form(client)
    answer = submit_form(client, csrf, email=address, name="Rita Reader", consent="yes", website="")
    assert_html_page(answer, 200)
    assert page_title(answer) == "Check your inbox"
    assert CHECK_INBOX.format(email=address) in page_text(answer)
    assert "location" not in answer.headers

    settled(server)
    subscriber = find(sessions, address)
    assert subscriber is not None and subscriber.status == Status.PENDING
    assert subscriber.email == "Reader@example.org"  # the domain is normalised
    assert subscriber.name == "Rita Reader"
    assert subscriber.consent_source == "web form"
    assert subscriber.consent_text == CONSENT_TEXT
    assert subscriber.consent_ip == "127.0.0.1"
    assert subscriber.consent_user_agent.startswith("python-httpx/")

    # 2. The confirmation email, as a mail client reads it.
    mail = server.mail()
    assert len(mail) == 1
    message = mail[0]
    assert message["To"].addresses[0].addr_spec == "Reader@example.org"
    assert message["Subject"] == "Confirm your subscription to The Weekly"
    link = confirm_link(server, message)
    assert "This link works for 7 days." in text_part(message)

    # 3. Following the link asks (a mail scanner fetches it too); the page's button confirms.
    ask_confirm = client.get(link)
    assert_html_page(ask_confirm, 200)
    assert page_title(ask_confirm) == "Confirm your subscription"
    assert "Subscribe Reader@example.org to The Weekly?" in page_text(ask_confirm)
    assert find(sessions, address).status == Status.PENDING  # type: ignore[union-attr]
    confirmed = client.post(link)
    assert_html_page(confirmed, 200)
    assert page_title(confirmed) == "You are subscribed"
    assert "Thank you! The Weekly will arrive in your inbox." in page_text(confirmed)
    subscriber = find(sessions, address)
    assert subscriber is not None and subscriber.status == Status.CONFIRMED
    assert subscriber.confirmed_at is not None
    # A second click on the link or its button changes nothing and does not fail.
    for again in (client.get(link), client.post(link)):
        assert_html_page(again, 200)
        assert page_title(again) == "You are subscribed"

    # 4. The unsubscribe link: a GET only asks.
    unsubscribe_url = server.unsubscribe_url(subscriber.id)
    assert unsubscribe_url.startswith(f"{server.url}/unsubscribe/")
    ask = client.get(unsubscribe_url)
    assert_html_page(ask, 200)
    assert page_title(ask) == "Unsubscribe"
    assert "Stop receiving The Weekly at Reader@example.org?" in page_text(ask)
    assert re.search(
        r'<form method="post"[^>]*>\s*<button type="submit">Unsubscribe</button>', ask.text
    )
    assert ask.headers["referrer-policy"] == "no-referrer"  # the token is in the URL
    assert find(sessions, address).status == Status.CONFIRMED  # type: ignore[union-attr]

    # 5. RFC 8058 one-click: 200 at once, no redirect, no cookie needed or set.
    first = one_click(server, unsubscribe_url)
    assert first.status_code == 200, first.text
    assert "location" not in first.headers
    assert "set-cookie" not in first.headers
    subscriber = find(sessions, address)
    assert subscriber is not None and subscriber.status == Status.UNSUBSCRIBED
    assert subscriber.unsubscribed_at is not None
    with sessions() as session:
        suppression = store.suppression_of(session, address)
        assert suppression is not None and suppression.reason == "unsubscribed"
    [record] = activity(sessions, "unsubscribed")
    assert record.subscriber_id == subscriber.id and record.detail == {"how": "one-click"}

    # 6. A second one-click (providers retry) is fine and records nothing new.
    second = one_click(server, unsubscribe_url)
    assert second.status_code == 200, second.text
    assert "location" not in second.headers
    assert len(activity(sessions, "unsubscribed")) == 1

    # 7. The old confirmation link does not bring the reader back, and says so clearly.
    for stale in (client.get(link), client.post(link)):
        assert_html_page(stale, 400)
        assert page_title(stale) == "This link does not work"
    assert find(sessions, address).status == Status.UNSUBSCRIBED  # type: ignore[union-attr]

    # 8. Signing up again: the very same page a new address gets, but no email and a record.
    csrf = open_form(client)
    retry = submit_form(client, csrf, email=address, name="Rita Reader", consent="yes")
    assert_html_page(retry, 200)
    assert retry.text == answer.text
    settled(server)
    assert len(server.mail()) == 1, "a suppressed address must get no confirmation email"
    refused = activity(sessions, "resubscribe_refused")
    assert [(row.subscriber_id, row.detail) for row in refused] == [
        (subscriber.id, {"source": "web form"})
    ]
    assert find(sessions, address).status == Status.UNSUBSCRIBED  # type: ignore[union-attr]


def test_unsubscribe_page_button(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    """The page's own button: a plain POST to the page's URL, answered with a page."""
    assert subscribe_json(client, email="button@example.org", consent=True).status_code == 202
    client.post(confirm_link(server, server.mail()[0]))
    subscriber = find(sessions, "button@example.org")
    assert subscriber is not None and subscriber.status == Status.CONFIRMED
    url = server.unsubscribe_url(subscriber.id)

    for _ in range(3):  # scanners and previews fetch links, sometimes more than once
        assert client.get(url).status_code == 200
    assert find(sessions, "button@example.org").status == Status.CONFIRMED  # type: ignore[union-attr]

    # The form has no action: the browser posts back to the page's URL, with an empty body.
    done = client.post(url, content=b"", headers={"content-type": FORM})
    assert_html_page(done, 200)
    assert page_title(done) == "You are unsubscribed"
    assert "button@example.org will not receive The Weekly any more." in page_text(done)
    assert find(sessions, "button@example.org").status == Status.UNSUBSCRIBED  # type: ignore[union-attr]
    [record] = activity(sessions, "unsubscribed")
    assert record.detail == {"how": "web page"}
    # Pressing it again (back button, double click) is fine.
    assert client.post(url, content=b"", headers={"content-type": FORM}).status_code == 200


def test_one_click_as_multipart_form_data(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    """RFC 8058 §3.1: the POST body SHOULD be multipart/form-data (urlencoded MAY be used)."""
    assert subscribe_json(client, email="multi@example.org", consent=True).status_code == 202
    client.post(confirm_link(server, server.mail()[0]))
    subscriber = find(sessions, "multi@example.org")
    assert subscriber is not None
    url = server.unsubscribe_url(subscriber.id)
    with httpx.Client(follow_redirects=False, timeout=15) as provider:
        response = provider.post(url, files={"List-Unsubscribe": (None, "One-Click")})
    assert response.request.headers["content-type"].startswith("multipart/form-data")
    assert response.status_code == 200, response.text
    assert "location" not in response.headers and "set-cookie" not in response.headers
    assert find(sessions, "multi@example.org").status == Status.UNSUBSCRIBED  # type: ignore[union-attr]
    [record] = activity(sessions, "unsubscribed")
    assert record.detail == {"how": "one-click"}, "the record must say how they left"


# --- the JSON API and telling addresses apart ----------------------------------------------


def test_json_api_answers_alike_whatever_the_address_state(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    address = "api@example.org"
    body = {"email": address, "name": "Ada", "consent": True}
    expected = {"status": "check_inbox", "message": CHECK_INBOX.format(email=address)}

    new = client.post("/subscribe", json=body, headers={"user-agent": "api-test/1.0"})
    assert new.status_code == 202, new.text
    assert new.json() == expected
    settled(server)
    subscriber = find(sessions, address)
    assert subscriber is not None and subscriber.status == Status.PENDING
    assert subscriber.name == "Ada"
    assert (subscriber.consent_source, subscriber.consent_ip) == ("api", "127.0.0.1")
    assert subscriber.consent_user_agent == "api-test/1.0"
    assert subscriber.consent_text == CONSENT_TEXT
    assert len(server.mail()) == 1

    def same_answer(label: str) -> None:
        response = client.post("/subscribe", json=body, headers={"user-agent": "api-test/1.0"})
        assert response.status_code == new.status_code, label
        assert response.content == new.content, label
        assert "set-cookie" not in response.headers, label
        assert response.headers["content-type"] == new.headers["content-type"], label

    same_answer("already pending")
    assert len(server.mail()) == 1, "a repeat within the resend wait sends nothing"
    client.post(confirm_link(server, server.mail()[0]))
    same_answer("already confirmed")
    assert len(server.mail()) == 1
    assert count_subscribers(sessions) == 1

    subscriber = find(sessions, address)
    assert subscriber is not None
    assert one_click(server, server.unsubscribe_url(subscriber.id)).status_code == 200
    same_answer("unsubscribed and suppressed")
    assert len(server.mail()) == 1
    refused = activity(sessions, "resubscribe_refused")
    assert [(row.subscriber_id, row.detail) for row in refused] == [
        (subscriber.id, {"source": "api"})
    ]


def test_json_api_requires_consent(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    for body in (
        {"email": "c1@example.org"},
        {"email": "c2@example.org", "consent": False},
        {"email": "c3@example.org", "consent": "no"},
        {"email": "c4@example.org", "consent": None},
    ):
        response = subscribe_json(client, **body)
        assert response.status_code in (400, 422), (body, response.text)
        assert response.json() == {
            "error": "consent_required",
            "message": "Please tick the box to agree to receive the newsletter.",
        }, body
    assert count_subscribers(sessions) == 0
    assert server.mail() == []


INVALID = [
    "not-an-address",
    "reader@",
    "@example.org",
    "two@@example.org",
    "",
    "x" * 250 + "@e.org",
]


def test_invalid_address_on_the_form(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    for address in INVALID:
        csrf = open_form(client)
        form = submit_form(client, csrf, email=address, name="Nobody", consent="yes")
        assert_html_page(form, 400)
        assert page_title(form) == "Subscribe to The Weekly", "the form again, to correct it"
        assert re.search(
            r'<p class="error" id="form-error" role="alert">'
            r"Please enter a valid email address.</p>",
            form.text,
        ), address
        assert 'aria-describedby="form-error" aria-invalid="true"' in form.text
        assert f'value="{html.escape(address[:254])}"' in form.text, "what was typed is kept"
        assert CSRF_FIELD.findall(form.text) == [csrf], "the form can be sent again as it is"
    assert count_subscribers(sessions) == 0
    assert server.mail() == []


def test_invalid_address_on_the_api(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    statuses = set()
    for address in [*INVALID, 42, None, ["list@example.org"]]:
        api = subscribe_json(client, email=address, consent=True)
        statuses.add(api.status_code)
        assert api.headers["content-type"] == "application/json"
        assert api.json() == {
            "error": "invalid_email",
            "message": "Please enter a valid email address.",
        }, address
    assert statuses <= {400, 422}
    assert count_subscribers(sessions) == 0
    assert server.mail() == []


def test_api_answers_422_for_an_invalid_address(client: httpx.Client) -> None:
    """Unprocessable input: 422 from the JSON API (the HTML form page answers 400)."""
    api = subscribe_json(client, email="not-an-address", consent=True)
    assert api.json()["error"] == "invalid_email"
    assert api.status_code == 422, f"JSON API answered {api.status_code}: {api.text}"


def test_an_address_that_is_accepted_can_be_mailed(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    """Internationalised addresses: refused as invalid, or confirmed by email; never a 500.

    email-validator accepts SMTPUTF8 local parts (josé@…, 用户@…) by default, so the
    address reaches the store before the confirmation email is built.
    """
    answers = {}
    for address in ("josé@example.org", "用户@例子.中国"):
        response = client.post(
            "/subscribe", json={"email": address, "consent": True}, headers=CLOSE
        )
        answers[address] = response.status_code
        settled(server)
        if response.status_code == 202:
            assert find(sessions, address) is not None
        elif response.status_code in (400, 422):
            assert response.json()["error"] == "invalid_email"
            assert find(sessions, address) is None, "refused, so not stored either"
    mailed = {message["To"].addresses[0].addr_spec for message in server.mail()}
    accepted = {address for address, status in answers.items() if status == 202}
    assert 500 not in answers.values(), answers
    assert mailed == accepted, "every accepted address gets its confirmation email"


def test_form_without_consent(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    csrf = open_form(client)
    response = submit_form(client, csrf, email="careful@example.org", name="Cam")
    assert_html_page(response, 400)
    assert "Please tick the box to agree to receive the newsletter." in page_text(response)
    assert 'value="careful@example.org"' in response.text
    assert find(sessions, "careful@example.org") is None
    assert server.mail() == []
    # The reader fixes only what was wrong: what they typed stays, and the valid address is
    # not announced as invalid (aria-invalid) to screen-reader users.
    email_input = re.search(r'<input type="email" id="email"[^>]*>', response.text)
    assert email_input is not None
    problems = []
    if 'value="Cam"' not in response.text:
        problems.append("the name typed is gone")
    if 'aria-invalid="true"' in email_input.group(0):
        problems.append(f"a valid address is marked invalid: {email_input.group(0)}")
    assert problems == []


def test_honeypot_gets_the_same_answer_and_nothing_happens(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    csrf = open_form(client)
    person = submit_form(client, csrf, email="person@example.org", consent="yes", website="")
    bot = submit_form(
        client, csrf, email="bot@example.org", consent="yes", website="https://spam.example"
    )
    assert bot.status_code == person.status_code == 200
    assert bot.text == person.text.replace("person@example.org", "bot@example.org")

    api_person = subscribe_json(client, email="api-person@example.org", consent=True)
    api_bot = subscribe_json(client, email="api-bot@example.org", consent=True, website="x")
    assert api_bot.status_code == api_person.status_code == 202
    assert api_bot.json()["message"] == api_person.json()["message"].replace(
        "api-person@", "api-bot@"
    )

    assert find(sessions, "bot@example.org") is None
    assert find(sessions, "api-bot@example.org") is None
    recipients = sorted(message["To"].addresses[0].addr_spec for message in server.mail())
    assert recipients == ["api-person@example.org", "person@example.org"]


def test_what_a_visitor_typed_is_escaped(server: LiveServer, client: httpx.Client) -> None:
    script = '"><script>alert(1)</script>'
    csrf = open_form(client)
    # The honeypot echoes the address without validating it.
    trapped = submit_form(client, csrf, email=script, consent="yes", website="filled")
    assert trapped.status_code == 200
    assert "<script>" not in trapped.text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in trapped.text
    refused = submit_form(client, csrf, email=script, consent="yes")
    assert refused.status_code == 400
    assert "<script>" not in refused.text
    assert 'value="&#34;&gt;&lt;script&gt;' in refused.text, "escaped inside the value too"
    assert server.mail() == []


# --- guards ---------------------------------------------------------------------------------


def test_rate_limit_per_ip(start_server: Callable[..., LiveServer], sessions: sessionmaker) -> None:
    server = start_server(subscribe_rate_limit="3/minute")
    with httpx.Client(base_url=server.url, timeout=15) as client:
        for n in range(3):
            response = subscribe_json(client, email=f"r{n}@example.org", consent=True)
            assert response.status_code == 202, (n, response.text)
        limited = subscribe_json(client, email="r3@example.org", consent=True)
        assert limited.status_code == 429, limited.text
        assert limited.json()["error"] == "too_many"
        assert limited.json()["message"].startswith("Too many attempts from your network.")

        csrf = open_form(client)  # reading the form is not limited
        form = submit_form(client, csrf, email="r4@example.org", consent="yes")
        assert_html_page(form, 429)
        assert "Too many attempts from your network. Please wait a minute" in page_text(form)

    assert find(sessions, "r3@example.org") is None and find(sessions, "r4@example.org") is None
    assert len(server.mail()) == 3

    # Another address (127.0.0.2 is loopback too) has its own allowance.
    other = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=server.url, transport=other, timeout=15) as neighbour:
        response = subscribe_json(neighbour, email="n@example.org", consent=True)
    assert response.status_code == 202, response.text
    settled(server)
    subscriber = find(sessions, "n@example.org")
    assert subscriber is not None and subscriber.consent_ip == "127.0.0.2"


def test_rate_limit_is_shared_through_redis(
    start_server: Callable[..., LiveServer], sessions: sessionmaker
) -> None:
    """Two app processes behind one proxy: the limit holds across them when Redis is set."""
    with redis.Redis.from_url(REDIS_URL) as ping:
        assert ping.ping(), f"Redis is needed at {REDIS_URL} (.ci/run starts it)"
    settings = {"subscribe_rate_limit": "3/minute", "broker_url": REDIS_URL}
    servers = [start_server(**settings), start_server(**settings)]
    # A loopback address of this run's own, so that no earlier run's count is in the way.
    ip = "127." + ".".join(str(secrets.randbelow(250) + 1) for _ in range(3))
    transport = httpx.HTTPTransport(local_address=ip)
    with httpx.Client(transport=transport, timeout=15) as client:
        codes = []
        for n in range(4):
            url = f"{servers[n % 2].url}/subscribe"
            body = {"email": f"shared{n}@example.org", "consent": True}
            codes.append(client.post(url, json=body).status_code)
    assert codes == [202, 202, 202, 429]
    assert find(sessions, "shared3@example.org") is None


class StalledRedis:
    """A Redis that takes connections and never answers, as one stuck or cut off does."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self.listener.getsockname()[1]}/0"
        self.connected = threading.Event()
        self.connections: list[socket.socket] = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        with contextlib.suppress(OSError):  # the listener shut down
            while True:
                self.connections.append(self.listener.accept()[0])
                self.connected.set()

    def close(self) -> None:
        self.listener.shutdown(socket.SHUT_RDWR)  # wakes the accept; close alone does not
        self.thread.join(5)
        for connection in [self.listener, *self.connections]:
            connection.close()


def test_a_stalled_redis_holds_only_the_sign_up(
    start_server: Callable[..., LiveServer],
    sessions: sessionmaker,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The subscribe limit's count is in Redis: while Redis does not answer, the sign-up waits
    for it off the event loop, so the app's other requests go on; then it is refused (503,
    nothing stored), the log says what to check, and for a pause the limited requests (the
    stats sign-in too) are refused at once, without asking Redis again."""
    monkeypatch.setattr(guards, "LIMIT_STORE_TIMEOUT", 5.0)  # the window the test looks in
    stalled = StalledRedis()
    try:
        server = start_server(broker_url=stalled.url, stats_token="s3cret-stats-token-for-tests")
        answers: list[httpx.Response] = []

        def sign_up() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                answers.append(subscribe_json(client, email="stalled@example.org", consent=True))

        waiting = threading.Thread(target=sign_up)
        waiting.start()
        assert stalled.connected.wait(15), "the limit never asked Redis"
        with httpx.Client(base_url=server.url, timeout=15) as other:
            assert other.get("/subscribe").status_code == 200
            assert waiting.is_alive(), "the sign-up should still be waiting on Redis"
            waiting.join(30)
            assert not waiting.is_alive(), "the sign-up should give up on Redis"
            asked = len(stalled.connections)
            again = subscribe_json(other, email="stalled2@example.org", consent=True)
            stats = other.get("/stats/1", headers={"Authorization": "Bearer wrong"})
            login = other.post("/stats/1", data={"token": "wrong"})
    finally:
        stalled.close()
    assert len(stalled.connections) == asked, "the pause should not ask Redis again"
    for answer in [*answers, again]:
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "busy"
        assert answer.json()["message"].startswith("We cannot take this request right now.")
        assert 0 < int(answer.headers["retry-after"]) <= guards.LIMIT_STORE_PAUSE
    for page in (stats, login):
        assert_html_page(page, 503)
        assert "Please try again in a few minutes." in page_text(page)
        assert "retry-after" in page.headers
    assert find(sessions, "stalled@example.org") is None
    assert server.mail() == []
    said = [r.getMessage() for r in caplog.records if "Redis failed" in r.getMessage()]
    assert len(said) == 1, caplog.text  # once per pause, not once per refused request
    assert "MAILER_BROKER_URL" in said[0]


def test_the_limits_ask_redis_again_after_their_pause(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(guards, "LIMIT_STORE_PAUSE", 0.3)
    with socket.create_server(("127.0.0.1", 0)) as taken:  # a port nothing answers on
        port = taken.getsockname()[1]
    limit = guards.RateLimiter("3/minute", guards.LimitStore(f"redis://127.0.0.1:{port}/0"))
    with pytest.raises(guards.LimitUnavailable) as failed:
        limit.allow("192.0.2.1")
    assert failed.value.retry_after == 0.3  # Redis was asked, and failed
    with pytest.raises(guards.LimitUnavailable) as paused:
        limit.spent("192.0.2.1")
    assert paused.value.retry_after < 0.3  # the pause answered, Redis was not asked
    time.sleep(0.35)
    with pytest.raises(guards.LimitUnavailable) as again:
        limit.allow("192.0.2.1")
    assert again.value.retry_after == 0.3  # asked again once the pause was over


@pytest.mark.parametrize("how", ["no cookie, no field", "field only", "cookie only", "mismatch"])
def test_form_without_csrf_is_refused(server: LiveServer, sessions: sessionmaker, how: str) -> None:
    with httpx.Client(base_url=server.url, timeout=15) as client:
        token = open_form(client)
        field: str | None = token
        if how == "no cookie, no field":
            client.cookies.clear()
            field = None
        elif how == "field only":
            client.cookies.clear()
        elif how == "cookie only":
            field = None
        else:
            field = token[::-1]
        response = submit_form(client, field, email="csrf@example.org", consent="yes")
    assert_html_page(response, 403)
    assert "This form has expired. Please reload the page and try again." in page_text(response)
    # The page it answers with is a working form again, with a token for the next try.
    fresh = CSRF_FIELD.findall(response.text)
    assert len(fresh) == 1 and response.cookies.get(CSRF_COOKIE) == fresh[0]
    assert find(sessions, "csrf@example.org") is None
    assert server.mail() == []


def test_body_over_8_kb_is_refused(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    padding = "x" * 9000
    api = client.post(
        "/subscribe",
        content=json.dumps({"email": "big@example.org", "consent": True, "pad": padding}),
        headers={"content-type": "application/json", **CLOSE},  # the rest is left unread
    )
    assert api.status_code == 413, api.text
    assert api.json() == {"error": "too_large", "message": "The form sent too much data."}

    csrf = open_form(client)
    fields = {"csrf": csrf, "email": "big@example.org", "consent": "yes", "pad": padding}
    form = client.post("/subscribe", data=fields, headers=CLOSE)
    assert_html_page(form, 413)
    assert "The form sent too much data." in page_text(form)
    assert find(sessions, "big@example.org") is None
    assert server.mail() == []

    # Exactly 8 KB is still accepted.
    base = {"email": "edge@example.org", "consent": True, "pad": ""}
    base["pad"] = "y" * (8 * 1024 - len(json.dumps(base)))
    edge = json.dumps(base).encode()
    assert len(edge) == 8 * 1024
    response = client.post("/subscribe", content=edge, headers={"content-type": "application/json"})
    assert response.status_code == 202, response.text


def test_undecodable_bodies_get_a_400_not_a_500(server: LiveServer, sessions: sessionmaker) -> None:
    with httpx.Client(base_url=server.url, timeout=15) as client:
        api = client.post(
            "/subscribe",
            content=b'{"email": "j@example.org", "consent"',
            headers={"content-type": "application/json"},
        )
        assert api.status_code in (400, 422), api.text
        assert api.json()["error"] == "invalid_request"
        not_an_object = client.post("/subscribe", json=["j@example.org"])
        assert not_an_object.status_code in (400, 422), not_an_object.text
        assert not_an_object.json()["error"] == "invalid_request"

    # A form that is not UTF-8 (an old browser, a bot): the form again, with a message.
    with httpx.Client(base_url=server.url, timeout=15) as client:
        csrf = open_form(client)
        body = f"csrf={csrf}&consent=yes&email=caf%E9@example.org&name=\xe9".encode("latin-1")
        response = client.post("/subscribe", content=body, headers={"content-type": FORM})
    assert_html_page(response, 400)
    assert "Please enter a valid email address." in page_text(response)
    assert count_subscribers(sessions) == 0


# --- links that do not work -----------------------------------------------------------------


@pytest.fixture
def confirmed(server: LiveServer, client: httpx.Client, sessions: sessionmaker) -> Subscriber:
    """A subscriber who went through the loop, for the bad-link tests."""
    assert subscribe_json(client, email="links@example.org", consent=True).status_code == 202
    assert client.post(confirm_link(server, server.mail()[0])).status_code == 200
    subscriber = find(sessions, "links@example.org")
    assert subscriber is not None and subscriber.status == Status.CONFIRMED
    return subscriber


def _flip(text: str, at: int) -> str:
    return text[:at] + ("A" if text[at] != "A" else "B") + text[at + 1 :]


def bad_confirm_tokens(server: LiveServer, subscriber_id: int) -> dict[str, str]:
    """Confirm tokens (itsdangerous: payload.timestamp.signature) that must not confirm."""
    genuine = sign(server, Purpose.CONFIRM, subscriber_id)
    payload, stamp, signature = genuine.split(".")
    other_payload = sign(server, Purpose.CONFIRM, subscriber_id + 1).split(".")[0]
    return {
        "another id's payload": f"{other_payload}.{stamp}.{signature}",
        "tampered signature": f"{payload}.{stamp}.{_flip(signature, 10)}",
        "truncated": genuine[: len(genuine) // 2],
        "an unsubscribe token": token_of(server.unsubscribe_url(subscriber_id)),
        "signed for unsubscribe": sign(server, Purpose.UNSUBSCRIBE, subscriber_id),
        "another secret": Signer(["some-other-secret"]).sign(Purpose.CONFIRM, subscriber_id),
        "garbage": "not-a-token",
        "no such subscriber": sign(server, Purpose.CONFIRM, 987_654),
        "not an id": sign(server, Purpose.CONFIRM, "1"),
        "percent junk": "%FF%00%2e",
        "non-ASCII": f"{payload}.{stamp}.{signature[:-1]}é",
    }


def bad_unsubscribe_tokens(server: LiveServer, subscriber_id: int) -> dict[str, str]:
    """Unsubscribe tokens (compact: id.mac) that must not unsubscribe."""
    signer = Signer(server.settings.secret_keys)
    genuine = signer.sign_ids(Purpose.UNSUBSCRIBE, subscriber_id)
    body, mac = genuine.rsplit(".", 1)
    return {
        "another id": f"{subscriber_id + 1}.{mac}",
        "tampered mac": f"{body}.{_flip(mac, 5)}",
        "truncated mac": genuine[:-4],
        "no mac": body,
        "two ids": f"{body}.{subscriber_id}.{mac}",
        "a tracking token": signer.sign_ids(Purpose.TRACK, subscriber_id),
        "a confirm token": sign(server, Purpose.CONFIRM, subscriber_id),
        "another secret": Signer(["some-other-secret"]).sign_ids(
            Purpose.UNSUBSCRIBE, subscriber_id
        ),
        "garbage": "not-a-token",
        "no such subscriber": signer.sign_ids(Purpose.UNSUBSCRIBE, 987_654),
        "percent junk": "%FF%00%2e",
        "non-ASCII mac": f"{body}.{mac[:-1]}é",
    }


def assert_link_refused(response: httpx.Response, text: str = LINK_INVALID) -> None:
    assert_html_page(response, 400)
    assert page_title(response) == "This link does not work"
    assert text in page_text(response)


def test_bad_confirm_links(
    server: LiveServer, client: httpx.Client, sessions: sessionmaker
) -> None:
    assert subscribe_json(client, email="pending@example.org", consent=True).status_code == 202
    settled(server)
    subscriber = find(sessions, "pending@example.org")
    assert subscriber is not None
    answers = {}
    for label, token in bad_confirm_tokens(server, subscriber.id).items():
        page = client.get(f"/confirm/{token}", headers=CLOSE)
        button = client.post(f"/confirm/{token}", headers=CLOSE)
        answers[label] = (page.status_code, button.status_code)
        for response in (page, button):
            if response.status_code == 400:
                assert_link_refused(response)
    assert answers == dict.fromkeys(answers, (400, 400)), "every bad link gets the 400 page"
    assert find(sessions, "pending@example.org").status == Status.PENDING  # type: ignore[union-attr]

    # Eight days old, for a link that works for seven.
    expired = sign(server, Purpose.CONFIRM, subscriber.id, age=8 * 86400)
    for response in (client.get(f"/confirm/{expired}"), client.post(f"/confirm/{expired}")):
        assert_link_refused(response, LINK_EXPIRED)
        assert "Subscribe again to get a new one." in page_text(response)
    assert find(sessions, "pending@example.org").status == Status.PENDING  # type: ignore[union-attr]
    # Six days old still works.
    fresh = sign(server, Purpose.CONFIRM, subscriber.id, age=6 * 86400)
    assert page_title(client.get(f"/confirm/{fresh}")) == "Confirm your subscription"
    assert page_title(client.post(f"/confirm/{fresh}")) == "You are subscribed"


def test_bad_unsubscribe_links(
    server: LiveServer, client: httpx.Client, confirmed: Subscriber, sessions: sessionmaker
) -> None:
    answers = {}
    for label, token in bad_unsubscribe_tokens(server, confirmed.id).items():
        url = f"{server.url}/unsubscribe/{token}"
        page = client.get(url, headers=CLOSE)
        button = client.post(url, content=b"", headers={"content-type": FORM, **CLOSE})
        provider = one_click(server, url)
        answers[label] = (page.status_code, button.status_code, provider.status_code)
        if page.status_code == 400:
            assert_link_refused(page)
        if button.status_code == 400:
            assert_link_refused(button)
        assert "location" not in provider.headers
    assert answers == dict.fromkeys(answers, (400, 400, 400)), "GET, button, one-click: all 400"
    assert find(sessions, "links@example.org").status == Status.CONFIRMED  # type: ignore[union-attr]


OLD_SECRET, NEW_SECRET = (
    "the-old-secret-long-enough-to-be-safe",
    "the-new-secret-long-enough-to-be-safe",
)


def test_links_signed_before_a_secret_rotation_still_work(
    start_server: Callable[..., LiveServer], sessions: sessionmaker
) -> None:
    before = start_server(secret_keys=[OLD_SECRET])
    with httpx.Client(base_url=before.url, timeout=15) as client:
        assert subscribe_json(client, email="rotate@example.org", consent=True).status_code == 202
    settled(before)
    subscriber = find(sessions, "rotate@example.org")
    assert subscriber is not None
    old_confirm = confirm_link(before, before.mail()[0]).replace(before.url, "")
    old_unsubscribe = before.unsubscribe_url(subscriber.id).replace(before.url, "")

    after = start_server(secret_keys=[NEW_SECRET, OLD_SECRET])
    retired = start_server(secret_keys=[NEW_SECRET])
    with httpx.Client(base_url=after.url, timeout=15) as client:
        assert page_title(client.post(old_confirm)) == "You are subscribed"
        assert page_title(client.get(old_unsubscribe)) == "Unsubscribe"
    with httpx.Client(base_url=retired.url, timeout=15) as client:
        assert_link_refused(client.get(old_unsubscribe))
    # New links are signed with the new secret.
    assert after.unsubscribe_url(subscriber.id) != before.unsubscribe_url(subscriber.id)
    with httpx.Client(base_url=retired.url, timeout=15) as client:
        path = after.unsubscribe_url(subscriber.id).replace(after.url, "")
        assert page_title(client.get(path)) == "Unsubscribe"
