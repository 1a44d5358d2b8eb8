"""The real web app in a real uvicorn server on a free loopback port, for HTTP and browser tests.

Not a test module: ``serve`` is a context manager and ``server_factory`` a fixture factory
for the test modules that need a running server. The app is exactly what ``mailer serve``
builds (``create_app(Runtime(settings))``) and uvicorn serves it over TCP as in production; the
settings' ``public_url`` is the server's own address, so the links in the confirmation
email lead back to it. Mail goes to the outbox backend, a folder of ``.eml`` files that the
tests read as a mail client would.
"""

from __future__ import annotations

import email
import email.policy
import logging
import re
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, closing, contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI

from mailer.config import Settings
from mailer.runtime import Runtime
from mailer.web import create_app

__all__ = ["LiveServer", "confirm_link", "serve", "server_factory"]

STARTUP_SECONDS = 15.0
# Enough for every test but the rate-limit ones, which set their own limit.
GENEROUS_RATE = "1000/minute"


@dataclass(frozen=True)
class LiveServer:
    url: str
    app: FastAPI
    settings: Settings
    outbox: Path
    # What the server logged at WARNING and above (an unhandled exception, say).
    log: list[logging.LogRecord]

    def mail(self) -> list[EmailMessage]:
        """Every message in the outbox, oldest first (once the app has sent what it owes)."""
        assert self.app.state.after_response.wait(), "the app is still sending mail"
        if not self.outbox.exists():
            return []
        paths = sorted(self.outbox.glob("*.eml"), key=lambda path: path.stat().st_mtime_ns)
        return [_parse(path.read_bytes()) for path in paths]

    def unsubscribe_url(self, subscriber_id: int) -> str:
        return self.app.state.optin.unsubscribe_url(subscriber_id)


def _parse(data: bytes) -> EmailMessage:
    message = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(message, EmailMessage)
    return message


def text_part(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain",))
    assert part is not None, f"no text/plain part in {message['Subject']!r}"
    return part.get_content()


def confirm_link(server: LiveServer, message: EmailMessage) -> str:
    """The one confirmation link in a message's text part; it must point at this server."""
    text = text_part(message)
    links = re.findall(re.escape(server.url) + r"/confirm/[A-Za-z0-9_.\-]+", text)
    assert len(links) == 1, f"expected one confirm link to {server.url} in:\n{text}"
    html = message.get_body(preferencelist=("html",))
    assert html is not None and links[0] in html.get_content(), "HTML part lacks the same link"
    return links[0]


class _Keep(logging.Filter):
    """Takes the server thread's log records out of logging, to be written out after it stops.

    Formatting a traceback in the server thread while pytest formats a failure in the test's
    thread trips a CPython 3.11 bug (both parse source with ``ast`` for the ``^^^`` markers:
    "SystemError: AST constructor recursion depth mismatch"), and pytest attaches its
    handlers to every logger, so the records are kept from all handlers until then.
    """

    def __init__(self, thread_name: str) -> None:
        super().__init__()
        self.thread_name = thread_name
        self.records: list[logging.LogRecord] = []

    def filter(self, record: logging.LogRecord) -> bool:
        if record.threadName != self.thread_name:
            return True
        self.records.append(record)
        return False


@contextmanager
def _server_log(thread_name: str) -> Iterator[list[logging.LogRecord]]:
    """What the server thread logs (unhandled exceptions, say), shown once it has stopped."""
    loggers = [logging.getLogger(name) for name in ("uvicorn.error", "asyncio")]
    keep = _Keep(thread_name)
    for logger in loggers:
        logger.addFilter(keep)
    try:
        yield keep.records
    finally:
        for logger in loggers:
            logger.removeFilter(keep)
        formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
        for record in keep.records:  # pytest shows it under "Captured stderr teardown"
            sys.stderr.write(f"live server logged: {formatter.format(record)}\n")


def _free_socket() -> socket.socket:
    """A TCP socket bound to a free loopback port, handed to uvicorn (no race for the port)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextmanager
def serve(
    settings: Settings, database_url: str, folder: Path, access_log: bool = False, **overrides: Any
) -> Iterator[LiveServer]:
    """Run ``create_app`` under uvicorn in a background thread; yield once it accepts requests.

    ``public_url`` is the server's own address (the port is picked first), so the links in
    its email lead back to it; ``overrides`` are further settings. ``access_log``: uvicorn
    logs each request (at INFO, on ``uvicorn.access``) as `mailer serve` does.
    """
    sock = _free_socket()
    port = sock.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}"
    current = settings.model_copy(
        update={
            "database_url": database_url,
            "public_url": base_url,
            "outbox_dir": folder / "outbox",
            "backend": "outbox",
            "broker_url": "",
            "subscribe_rate_limit": GENEROUS_RATE,
            **overrides,
        }
    )
    app = create_app(Runtime(current))
    config = uvicorn.Config(
        app,
        proxy_headers=True,  # as `mailer serve` runs it
        log_config=None,  # leave the test run's logging alone
        log_level="info" if access_log else "warning",
        access_log=access_log,
        ws="none",
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    name = f"uvicorn-{port}"
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name=name, daemon=True)
    with closing(sock), _server_log(name) as log:
        thread.start()
        try:
            deadline = time.monotonic() + STARTUP_SECONDS
            while not server.started:
                if not thread.is_alive():
                    raise RuntimeError(f"uvicorn on {base_url} stopped during startup")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn on {base_url} did not start in {STARTUP_SECONDS}s")
                time.sleep(0.01)
            yield LiveServer(base_url, app, current, current.outbox_dir, log)
        finally:
            server.should_exit = True
            thread.join(timeout=15)
    assert not thread.is_alive(), f"uvicorn on {base_url} did not shut down"


def server_factory() -> Callable[..., Any]:
    """A fixture that starts live servers on demand: ``start(**settings_overrides)``.

    Use it as ``start_server = server_factory()`` in a test module; every server it started
    stops at the end of the test. The ``settings`` and ``database_url`` fixtures come from
    conftest, so a module that asks for it runs on SQLite and on PostgreSQL.
    """

    @pytest.fixture
    def start_server(
        settings: Settings, database_url: str, tmp_path: Path
    ) -> Iterator[Callable[..., LiveServer]]:
        with ExitStack() as stack:

            def start(**overrides: Any) -> LiveServer:
                return stack.enter_context(serve(settings, database_url, tmp_path, **overrides))

            yield start

    return start_server
