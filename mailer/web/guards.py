"""What stands between the public and the store: CSRF, rate limits, size limits, headers."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

from fastapi import Request
from limits import parse, storage, strategies
from limits.errors import StorageError
from starlette.background import BackgroundTask
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CSRF_COOKIE",
    "MAX_BODY",
    "AfterResponse",
    "LimitUnavailable",
    "RateLimiter",
    "SecurityHeaders",
    "client_ip",
    "csrf_ok",
    "new_csrf_token",
    "read_body",
]

log = logging.getLogger(__name__)
CSRF_COOKIE = "mailer_csrf"
MAX_BODY = 8 * 1024  # bytes: a subscribe form or JSON request is far smaller
# Our pages: no script at all, their one inline <style> and style attributes, forms that
# post only back to us, never inside another site's frame.
PAGE_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src 'self' data:; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": PAGE_CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",  # frame-ancestors, for browsers without CSP
    # Tokens are in our URLs, and a click redirect must not tell the destination its URL.
    "Referrer-Policy": "no-referrer",
}


# How long a limit check waits on Redis: a Redis that stopped answering costs a visitor a
# "try again" page after this long, not a request that never ends.
LIMIT_STORE_TIMEOUT = 2.0


class LimitUnavailable(Exception):
    """The limiter's Redis did not answer: nothing was counted (the log says what to check)."""


class RateLimiter:
    """A moving-window limit per key; in Redis when there is one, so all processes share it.

    The checks block on Redis: an async route runs them in the thread pool, never on the
    event loop, where a slow Redis would hold every other request too."""

    def __init__(self, rate: str, redis_url: str = "", name: str = "subscribe") -> None:
        self.item = parse(rate)
        self.name = name  # what is counted: each limiter keeps its own counts
        backend = (
            storage.storage_from_string(
                redis_url,
                wrap_exceptions=True,
                socket_timeout=LIMIT_STORE_TIMEOUT,
                socket_connect_timeout=LIMIT_STORE_TIMEOUT,
            )
            if redis_url.startswith("redis")
            else storage.MemoryStorage()
        )
        self.limiter = strategies.MovingWindowRateLimiter(backend)

    def allow(self, key: str) -> bool:
        """Count one attempt; False once ``key`` is over the limit."""
        try:
            return self.limiter.hit(self.item, self.name, key)
        except StorageError as exc:
            raise self._unavailable(exc) from exc

    def spent(self, key: str) -> bool:
        """Whether ``key`` has no attempt left, without counting one."""
        try:
            return not self.limiter.test(self.item, self.name, key)
        except StorageError as exc:
            raise self._unavailable(exc) from exc

    def _unavailable(self, exc: StorageError) -> LimitUnavailable:
        log.error(
            "the %s rate limit cannot reach Redis (%s): check that it runs at "
            "MAILER_BROKER_URL; until then those requests are refused with 503",
            self.name,
            exc.storage_error,
        )
        return LimitUnavailable(self.name)


def client_ip(request: Request) -> str:
    """The client's address, or "" when it is not one: behind a trusted proxy it comes from
    X-Forwarded-For, and header text must not reach the database or the limiters' keys."""
    host = request.client.host if request.client else ""
    try:  # without an IPv6 zone ("%eth0"), which can be any text
        return str(ipaddress.ip_address(host.partition("%")[0]))
    except ValueError:
        return ""


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes | None:
    """The request body, or None if it is over ``limit`` bytes: refused on its
    Content-Length before any of it is read, or as soon as more than that has come."""
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > limit:
        return None
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def new_csrf_token() -> str:
    return secrets.token_urlsafe(24)


def csrf_ok(request: Request, submitted: str) -> bool:
    """Double-submit check: the form's token must equal the cookie set with the form."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return bool(cookie) and hmac.compare_digest(cookie.encode(), submitted.encode())


class AfterResponse:
    """Work done after the answer went out, so that slow work (sending the confirmation
    email) cannot be timed from outside; counted, so a shutdown or a test can wait for it."""

    def __init__(self) -> None:
        self.pending = 0
        self.idle = threading.Condition()

    def task(self, work: Callable[..., Any], *args: Any) -> BackgroundTask:
        with self.idle:
            self.pending += 1
        return BackgroundTask(self._run, work, *args)

    def _run(self, work: Callable[..., Any], *args: Any) -> None:
        try:
            work(*args)
        except Exception:  # the visitor has had the answer; the operator gets the log
            log.exception("work after the response failed: %s", getattr(work, "__name__", work))
        finally:
            with self.idle:
                self.pending -= 1
                self.idle.notify_all()

    def wait(self, timeout: float = 10.0) -> bool:
        """Until nothing is pending (True), or ``timeout`` seconds (False)."""
        with self.idle:
            return self.idle.wait_for(lambda: self.pending == 0, timeout)


class SecurityHeaders:
    """ASGI middleware: ``SECURITY_HEADERS`` on every answer (pages, JSON, redirects) that
    has not set its own (the archive sets a CSP for the email it shows)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
