"""Uvicorn's access log, as `mailer serve` writes it, holds no reader's token."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import pytest

from mailer.config import Settings
from mailer.tokens import Purpose, Signer
from mailer.web.access_log import redact
from tests.live_server import serve


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
def test_the_access_log_keeps_routes_and_drops_tokens(
    settings: Settings, database_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="uvicorn.access")
    token = Signer(settings.secret_keys).sign_ids(Purpose.UNSUBSCRIBE, 1)
    paths = [
        f"/unsubscribe/{token}",
        f"/confirm/{token}?from=mail",
        f"/o/{token}.gif",
        f"/c/{token}/0",
        "/subscribe",
    ]
    with serve(settings, database_url, tmp_path, access_log=True) as server:
        for path in paths:
            httpx.get(server.url + path)
    logged = [r.getMessage() for r in caplog.records if r.name == "uvicorn.access"]
    assert len(logged) == len(paths), logged
    assert not [line for line in logged if token in line]
    for route in ("/unsubscribe/…", "/confirm/…?from=mail", "/o/…", "/c/…/0", "/subscribe"):
        assert any(f'"GET {route} HTTP/1.1"' in line for line in logged), (route, logged)


@pytest.mark.parametrize(
    ("path", "shown"),
    [
        ("/unsubscribe/abc.def", "/unsubscribe/…"),
        ("/c/abc/12", "/c/…/12"),
        ("/archive/my-post", "/archive/my-post"),
        ("/confirmed/abc", "/confirmed/abc"),
        ("//o/abc.gif", "//o/…"),  # a client that doubles the slash sends a real token too
    ],
)
def test_only_the_token_of_a_readers_link_is_dropped(path: str, shown: str) -> None:
    assert redact(path) == shown
