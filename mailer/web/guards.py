"""What stands between the public and the store: CSRF, rate limits, size limits, headers."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import math
import secrets
import threading
import time
from collections.abc import Callable
from typing import Any

from anyio import CapacityLimiter, to_thread
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
    "LimitStore",
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


# How long a limit check waits on Redis, and, once it failed, how long the limits refuse
# without asking it again: a Redis that stopped answering costs one check 2 s, then the
# limited requests a quick 503 each (at most one uncounted guess per pause), and the log
# one line per pause, however many requests come.
LIMIT_STORE_TIMEOUT = 2.0
LIMIT_STORE_PAUSE = 10.0
# The threads the checks wait on Redis in: their own few, so a flood of sign-ups while Redis
# stalls cannot take the thread pool that the app's other pages need.
_LIMIT_THREADS = 4


class LimitUnavailable(Exception):
    """The limiter's Redis failed: the attempt may not have been counted (the log says what
    to check); ``retry_after`` is when the limits ask Redis again, in seconds."""

    def __init__(self, name: str, retry_after: float) -> None:
        super().__init__(name)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        """What a 503 for it says about when to come back."""
        return {"Retry-After": str(math.ceil(self.retry_after))}


class LimitStore:
    """Where the rate limits count: Redis when there is one, so all processes share the
    counts, else this process's memory. After Redis fails, no limit asks it again for
    LIMIT_STORE_PAUSE. The checks block on Redis: async routes await ``RateLimiter.allowed``
    and ``exhausted``, which wait in the store's own threads, never on the event loop,
    where a slow Redis would hold every other request too."""

    def __init__(self, redis_url: str = "") -> None:
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
        self.window = strategies.MovingWindowRateLimiter(backend)
        self.paused_until = 0.0  # time.monotonic(): no check asks Redis before then
        self.threads = CapacityLimiter(_LIMIT_THREADS)

    def ask(self, check: Callable[[], bool], name: str) -> bool:
        """``check()``'s answer, or ``LimitUnavailable`` (paused, or Redis failed now)."""
        left = self.paused_until - time.monotonic()
        if left > 0:
            raise LimitUnavailable(name, left)
        try:
            return check()
        except StorageError as exc:
            self.paused_until = time.monotonic() + LIMIT_STORE_PAUSE
            log.error(
                "the %s rate limit's Redis failed (%s): check that it runs at "
                "MAILER_BROKER_URL; the limited requests are refused with 503 meanwhile, "
                "and Redis is asked again in %g s",
                name,
                exc.storage_error,
                LIMIT_STORE_PAUSE,
            )
            raise LimitUnavailable(name, LIMIT_STORE_PAUSE) from exc


class RateLimiter:
    """A moving-window limit per key, counted in ``store``."""

    def __init__(self, rate: str, store: LimitStore, name: str = "subscribe") -> None:
        self.item = parse(rate)
        self.store = store
        self.name = name  # what is counted: each limiter keeps its own counts

    def allow(self, key: str) -> bool:
        """Count one attempt; False once ``key`` is over the limit."""
        window = self.store.window
        return self.store.ask(lambda: window.hit(self.item, self.name, key), self.name)

    def spent(self, key: str) -> bool:
        """Whether ``key`` has no attempt left, without counting one."""
        window = self.store.window
        return not self.store.ask(lambda: window.test(self.item, self.name, key), self.name)

    async def allowed(self, key: str) -> bool:
        """``allow``, from the event loop."""
        return await to_thread.run_sync(self.allow, key, limiter=self.store.threads)

    async def exhausted(self, key: str) -> bool:
        """``spent``, from the event loop."""
        return await to_thread.run_sync(self.spent, key, limiter=self.store.threads)


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
