"""What stands between the public and the store: CSRF, a rate limit, size limits."""

from __future__ import annotations

import hmac
import secrets

from fastapi import Request
from limits import parse, storage, strategies

__all__ = ["CSRF_COOKIE", "MAX_BODY", "RateLimiter", "client_ip", "csrf_ok", "new_csrf_token"]

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
