"""Signed tokens for the links in email: confirm, unsubscribe, and tracking.

HMAC-signed with ``itsdangerous`` under the secrets from config (``MAILER_SECRET_KEYS``,
newest first: the first signs, all verify, so a secret can be rotated without
breaking links already sent). Each purpose is a separate salt, so a token made for
one purpose is rejected for another. Signatures are compared in constant time.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from mailer.errors import TokenError, TokenExpired

__all__ = ["Purpose", "Signer"]


class Purpose(StrEnum):
    CONFIRM = "confirm"
    UNSUBSCRIBE = "unsubscribe"
    OPEN = "open"
    CLICK = "click"


class Signer:
    def __init__(self, secrets: list[str]) -> None:
        if not secrets or not all(secrets):
            raise TokenError("no signing secret: set MAILER_SECRET_KEYS")
        # itsdangerous signs with the last key and tries them all when verifying.
        self._keys = list(reversed(secrets))
        self._serializers: dict[Purpose, URLSafeTimedSerializer] = {}

    def sign(self, purpose: Purpose, payload: Any) -> str:
        return self._serializer(purpose).dumps(payload)

    def verify(self, purpose: Purpose, token: str, max_age: int | None = None) -> Any:
        """The payload of a genuine, unexpired ``purpose`` token; otherwise ``TokenError``."""
        try:
            return self._serializer(purpose).loads(token, max_age=max_age)
        except SignatureExpired as exc:
            raise TokenExpired(f"the {purpose} link has expired") from exc
        except BadSignature as exc:
            raise TokenError(f"the {purpose} link is not valid") from exc

    def _serializer(self, purpose: Purpose) -> URLSafeTimedSerializer:
        if purpose not in self._serializers:
            self._serializers[purpose] = URLSafeTimedSerializer(self._keys, salt=str(purpose))
        return self._serializers[purpose]
