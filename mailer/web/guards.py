"""What stands between the public and the store: CSRF, a rate limit, size limits."""

from __future__ import annotations

import hmac
import logging
import secrets
import threading
from collections.abc import Callable
from typing import Any

from fastapi import Request
from limits import parse, storage, strategies
from starlette.background import BackgroundTask

__all__ = [
    "CSRF_COOKIE",
    "MAX_BODY",
    "AfterResponse",
    "RateLimiter",
    "client_ip",
    "csrf_ok",
    "new_csrf_token",
]

log = logging.getLogger("mailer.web")
CSRF_COOKIE = "mailer_csrf"
MAX_BODY = 8 * 1024  # bytes: a subscribe form or JSON request is far smaller


class RateLimiter:
    """A moving-window limit per key; in Redis when there is one, so all processes share it."""

    def __init__(self, rate: str, redis_url: str = "") -> None:
        self.item = parse(rate)
        backend = (
            storage.storage_from_string(redis_url)
            if redis_url.startswith("redis")
            else storage.MemoryStorage()
        )
        self.limiter = strategies.MovingWindowRateLimiter(backend)

    def allow(self, key: str) -> bool:
        return self.limiter.hit(self.item, "subscribe", key)


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


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
