"""Pages a person meets by mistake, and the language of pages and notices when MAILER_LANG is
empty: the real app in uvicorn, on SQLite and PostgreSQL."""

from __future__ import annotations

import email
import email.policy
from collections.abc import Callable
from pathlib import Path

import httpx
from sqlalchemy.orm import sessionmaker

from mailer.config import Settings
from mailer.runtime import Runtime
from mailer.sending.confirmation import ConfirmationMail
from mailer.store.ledger import Campaign
from tests.live_server import LiveServer, server_factory

start_server = server_factory()
BROWSER = {"accept": "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8"}


def test_an_unknown_url_is_a_page_for_a_browser_and_json_for_a_client(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server(lang="")
    page = httpx.get(f"{server.url}/no/such/page", headers=BROWSER)
    assert page.status_code == 404 and page.headers["content-type"].startswith("text/html")
    assert '<html lang="en">' in page.text and "There is nothing at this address." in page.text
    api = httpx.get(f"{server.url}/no/such/page", headers={"accept": "application/json"})
    assert api.status_code == 404 and api.json() == {"detail": "Not Found"}


def test_pages_and_the_confirmation_follow_the_latest_issue(
    start_server: Callable[..., LiveServer],
    sessions: sessionmaker,
    settings: Settings,
    database_url: str,
    tmp_path: Path,
) -> None:
    with sessions.begin() as session:
        edition = {"lang": "zh-CN"}  # what the language is read from; the rest is not read
        session.add(Campaign(slug="s", subject="周报", edition=edition, backend="outbox"))
    server = start_server(lang="")
    page = httpx.get(f"{server.url}/nothing-here", headers=BROWSER)
    assert '<html lang="zh-CN">' in page.text and "这个地址没有内容。" in page.text

    current = settings.model_copy(
        update={"database_url": database_url, "lang": "", "outbox_dir": tmp_path / "out"}
    )
    runtime = Runtime(current)
    mail = ConfirmationMail(current, runtime.renderer, runtime.backend, runtime.publication_lang)
    mail(1, "reader@example.org", "", "https://mail.example.org/confirm/x")
    runtime.close()
    (sent,) = (tmp_path / "out").glob("*.eml")
    message = email.message_from_bytes(sent.read_bytes(), policy=email.policy.default)
    assert message["Subject"] == "请确认订阅 The Weekly"  # spaced: mailer/content/spacing.py
