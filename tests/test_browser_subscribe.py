"""A reader on a phone subscribes, confirms and unsubscribes in a real headless Chromium.

The live server (tests/live_server.py) serves the real app on SQLite; Chromium fills the
form as a person would (labels, checkbox, the Subscribe button, the CSRF cookie it was
given), the confirmation email is read from the outbox and its link opened in the same
browser, where the page's button confirms. Screenshots at 375 px go to tests/artifacts/
(gitignored) for a human look, and no page may scroll sideways on that screen.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page
from sqlalchemy.orm import sessionmaker

from mailer.config import Settings
from subscribers import store
from subscribers.models import Status
from tests.conftest import ARTIFACTS
from tests.live_server import LiveServer, confirm_link, serve

WIDTH, HEIGHT = 375, 800
# Long, but real: university and company addresses often are.
ADDRESS = "alexandra.konstantinopoulou@physics.ox.ac.uk"
# SQLite is enough here: the HTTP tests run every step on PostgreSQL too.
pytestmark = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
CONSENT = "I agree to receive The Weekly by email and know that I can unsubscribe at any time."


@pytest.fixture
def server(settings: Settings, database_url: str, tmp_path: Path) -> Iterator[LiveServer]:
    with serve(settings, database_url, tmp_path) as live:
        yield live


def open_phone(browser: Browser, server: LiveServer, color_scheme: str = "light") -> Page:
    context = browser.new_context(
        viewport={"width": WIDTH, "height": HEIGHT},
        color_scheme=color_scheme,  # type: ignore[arg-type]
        is_mobile=True,
        has_touch=True,
        device_scale_factor=2,
    )
    page = context.new_page()
    # Hermetic: nothing but the live server may be fetched.
    page.route(
        lambda url: not url.startswith(server.url + "/"),
        lambda route: route.abort(),
    )
    return page


def screenshot(page: Page, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    assert path.is_file() and path.stat().st_size > 0
    return path


def sideways(page: Page) -> list[object]:
    """Why the page scrolls sideways at its width, if it does: overflowing boxes and elements."""
    problems: list[object] = []
    for name, scroll_width, client_width in page.evaluate(
        """() => [["html", document.documentElement], ["body", document.body]].map(
               ([name, el]) => [name, el.scrollWidth, el.clientWidth])"""
    ):
        if scroll_width > client_width:
            problems.append(f"{name} scrollWidth {scroll_width} > clientWidth {client_width}")
    problems += page.evaluate(
        """(width) => Array.from(document.querySelectorAll("body *"))
               .filter((el) => !el.closest(".trap"))
               .filter((el) => el.getBoundingClientRect().right > width + 1)
               .map((el) => [el.tagName, el.className,
                             Math.round(el.getBoundingClientRect().right)])""",
        WIDTH,
    )
    return problems


def heading(page: Page) -> str:
    return page.locator("h1").inner_text().strip()


def test_subscribe_confirm_unsubscribe_in_chromium(
    browser: Callable[[], Browser], server: LiveServer, sessions: sessionmaker
) -> None:
    page = open_phone(browser(), server)
    layout: dict[str, list[object]] = {}  # checked at the end, so every page gets its look
    try:
        # The form, as a phone shows it.
        response = page.goto(f"{server.url}/subscribe", wait_until="load")
        assert response is not None and response.status == 200, response and response.text()
        assert page.evaluate("document.documentElement.lang") == "en"
        assert heading(page) == "Subscribe to The Weekly"
        screenshot(page, "subscribe-form-375.png")
        layout["form"] = sideways(page)
        # The honeypot is off screen, and the keyboard skips it.
        trap = page.locator("#website").bounding_box()
        assert trap is not None and trap["x"] + trap["width"] <= 0, f"honeypot visible: {trap}"
        page.get_by_label("Email address").focus()
        order = []
        for _ in range(3):
            page.keyboard.press("Tab")
            order.append(
                page.evaluate("document.activeElement.name || document.activeElement.tagName")
            )
        assert order == ["name", "consent", "BUTTON"], f"tab order: {order}"

        # Sent without the consent box ticked: the form again, with the reason.
        page.get_by_label("Email address").fill(ADDRESS)
        page.get_by_label("Name (optional)").fill("Margaret")
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            page.get_by_role("button", name="Subscribe").click()
        assert posted.value.status == 400
        page.wait_for_load_state("load")
        alert = page.get_by_role("alert")
        assert alert.inner_text() == "Please tick the box to agree to receive the newsletter."
        assert page.get_by_label("Email address").input_value() == ADDRESS
        screenshot(page, "subscribe-error-375.png")
        layout["form with error"] = sideways(page)
        assert server.mail() == []

        # Ticked and sent: the check-inbox page.
        page.get_by_label("Name (optional)").fill("Margaret")  # as a person would, if it is empty
        page.get_by_label(CONSENT).check()
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            page.get_by_role("button", name="Subscribe").click()
        assert posted.value.status == 200
        page.wait_for_load_state("load")
        assert heading(page) == "Check your inbox"
        assert ADDRESS in page.locator("main").inner_text()
        screenshot(page, "subscribe-check-inbox-375.png")
        layout["check inbox"] = sideways(page)

        # The confirmation email, and its link opened in the browser.
        mail = server.mail()
        assert len(mail) == 1
        assert mail[0]["To"].addresses[0].addr_spec == ADDRESS
        assert mail[0]["To"].addresses[0].display_name == "Margaret"
        page.goto(confirm_link(server, mail[0]), wait_until="load")
        assert heading(page) == "Confirm your subscription"
        assert f"Subscribe {ADDRESS} to The Weekly?" in page.locator("main").inner_text()
        screenshot(page, "subscribe-confirm-375.png")
        layout["confirm"] = sideways(page)
        with sessions() as session:
            assert store.find(session, ADDRESS).status == Status.PENDING  # type: ignore[union-attr]
        with page.expect_response(lambda r: r.request.method == "POST") as posted:
            page.get_by_role("button", name="Yes, subscribe me").click()
        assert posted.value.status == 200
        page.wait_for_load_state("load")
        assert heading(page) == "You are subscribed"
        screenshot(page, "subscribe-confirmed-375.png")
        layout["confirmed"] = sideways(page)
        with sessions() as session:
            subscriber = store.find(session, ADDRESS)
            assert subscriber is not None and subscriber.status == Status.CONFIRMED
            assert subscriber.name == "Margaret"
            assert subscriber.consent_source == "web form" and subscriber.consent_text == CONSENT
            assert "Chrome" in subscriber.consent_user_agent
            subscriber_id = subscriber.id

        # The unsubscribe page asks; its button unsubscribes.
        page.goto(server.unsubscribe_url(subscriber_id), wait_until="load")
        assert heading(page) == "Unsubscribe"
        assert f"Stop receiving The Weekly at {ADDRESS}?" in page.locator("main").inner_text()
        screenshot(page, "subscribe-unsubscribe-375.png")
        layout["unsubscribe"] = sideways(page)
        with sessions() as session:
            assert store.find(session, ADDRESS).status == Status.CONFIRMED  # type: ignore[union-attr]
        page.get_by_role("button", name="Unsubscribe").click()
        page.wait_for_load_state("load")
        assert heading(page) == "You are unsubscribed"
        screenshot(page, "subscribe-unsubscribed-375.png")
        layout["unsubscribed"] = sideways(page)
        with sessions() as session:
            assert store.find(session, ADDRESS).status == Status.UNSUBSCRIBED  # type: ignore[union-attr]
    finally:
        page.context.close()
    problems = {name: found for name, found in layout.items() if found}
    assert problems == {}, f"pages scroll sideways at {WIDTH}px: {problems}"


def test_subscribe_form_dark_mode(browser: Callable[[], Browser], server: LiveServer) -> None:
    page = open_phone(browser(), server, color_scheme="dark")
    try:
        response = page.goto(f"{server.url}/subscribe", wait_until="load")
        assert response is not None and response.status == 200, response and response.text()
        screenshot(page, "subscribe-form-dark-375.png")
        assert page.evaluate("matchMedia('(prefers-color-scheme: dark)').matches")
        background = page.evaluate("getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(17, 19, 24)", background  # --bg of the dark theme
        assert sideways(page) == []
    finally:
        page.context.close()
