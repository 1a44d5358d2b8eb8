"""SendGrid v3 Mail Send through the ``sendgrid`` package: one request per batch.

A batch becomes one request with a personalization per reader (SendGrid takes up
to 1000): the reader's own links as substitutions, the list headers, and the
delivery id as a custom argument (never the address), so provider events can be
matched back to the ledger. SendGrid writes the To header from a personalization's
name, so a reader whose name is unsafe is left out of the request and fails alone.
"""

from __future__ import annotations

import http.client
import re
import time
import urllib.error
from email.utils import parsedate_to_datetime
from typing import Any

from python_http_client import exceptions as http_errors
from sendgrid import SendGridAPIClient

from mailer.delivery import Outcome
from mailer.delivery.identity import Identity
from mailer.delivery.message import (
    Batch,
    check_batch,
    feedback_headers,
    list_headers,
    reader_name,
    shared_list_headers,
    unsubscribe_header,
    without_unsafe_readers,
)
from mailer.errors import (
    ConfigError,
    PermanentDeliveryError,
    TransientDeliveryError,
    UncertainDeliveryError,
)

__all__ = ["SendGridBackend", "build_request"]

MAX_PERSONALIZATIONS = 1000
_NOT_IN_NAMES = re.compile(r"[,;]+")
_TRANSIENT_STATUS = {429, 500, 502, 503, 504}


def build_request(batch: Batch, identity: Identity | None = None) -> dict[str, Any]:
    """The Mail Send request body for ``batch`` (valid against SendGrid's schema), with
    ``identity``'s headers: ``List-Id`` with the list headers, ``Feedback-ID`` once for all,
    ``Reply-To`` as SendGrid's own field (it refuses it among headers).

    Raises ``PermanentDeliveryError`` for an unsafe subject or sender name and
    ``UnsafeHeaderValue`` for an unsafe reader's name (``SendGridBackend.send`` leaves
    such readers out before it gets here).
    """
    if len(batch.envelopes) > MAX_PERSONALIZATIONS:
        raise ValueError(f"a SendGrid request takes at most {MAX_PERSONALIZATIONS} recipients")
    check_batch(batch)
    # List mail (every copy with an unsubscribe link): the list headers every reader gets
    # alike go once, in the request's own headers, which SendGrid gives each personalization;
    # only List-Unsubscribe is the reader's. A quarter less to encode, send and parse.
    list_mail = bool(batch.envelopes) and all(e.unsubscribe_url for e in batch.envelopes)
    personalizations = []
    for envelope in batch.envelopes:
        to = {"email": envelope.email}
        name = _NOT_IN_NAMES.sub(" ", reader_name(envelope)).strip()
        if name:  # SendGrid drops a recipient whose name has a comma or a semicolon
            to["name"] = name
        personalization: dict[str, Any] = {
            "to": [to],
            "custom_args": {"delivery": envelope.key},
        }
        substitutions = envelope.substitutions()
        if substitutions:
            personalization["substitutions"] = substitutions
        if list_mail:
            personalization["headers"] = {"List-Unsubscribe": unsubscribe_header(batch, envelope)}
        elif envelope.unsubscribe_url:
            personalization["headers"] = list_headers(batch, envelope, identity)
        personalizations.append(personalization)
    sender: dict[str, str] = {"email": batch.sender.email}
    if batch.sender.name:
        sender["name"] = batch.sender.name
    body: dict[str, Any] = {
        "personalizations": personalizations,
        "from": sender,
        "subject": batch.subject,
        "content": [
            {"type": "text/plain", "value": batch.text},
            {"type": "text/html", "value": batch.html},
        ],
    }
    # Our own tracking rewrote the links already; SendGrid's would wrap them a second time.
    body["tracking_settings"] = {
        "click_tracking": {"enable": False, "enable_text": False},
        "open_tracking": {"enable": False},
    }
    if batch.category:
        body["categories"] = [batch.category[:255]]
    shared = feedback_headers(batch, identity)
    if list_mail:
        shared = shared_list_headers(identity) | shared
    if shared:
        body["headers"] = shared
    if identity and identity.reply_to:
        body["reply_to"] = {"email": identity.reply_to}
    return body


class SendGridBackend:
    name = "sendgrid"

    def __init__(
        self, api_key: str, host: str, timeout: float, identity: Identity | None = None
    ) -> None:
        if not api_key:
            raise ConfigError("MAILER_BACKEND=sendgrid needs MAILER_SENDGRID_API_KEY")
        self.identity = identity
        self.client = SendGridAPIClient(api_key=api_key, host=host)
        self.client.client.timeout = timeout

    def send(self, batch: Batch) -> list[Outcome]:
        check_batch(batch)
        batch, unsafe = without_unsafe_readers(batch)
        refused = [Outcome(key, "failed", error=reason) for key, reason in unsafe.items()]
        if not batch.envelopes:
            return refused  # nothing to ask SendGrid for
        try:
            response = self.client.send(build_request(batch, self.identity))
        except http_errors.HTTPError as exc:
            raise _translate(exc) from exc
        except urllib.error.URLError as exc:
            # urllib wraps only what fails while the request is being sent: not accepted.
            raise TransientDeliveryError(f"cannot reach SendGrid: {exc.reason}") from exc
        except (OSError, http.client.HTTPException) as exc:
            # The request went out whole; the answer did not come back. It may be sent.
            raise UncertainDeliveryError(f"no answer from SendGrid: {exc!r}") from exc
        message_id = (response.headers or {}).get("X-Message-Id", "")
        sent = [Outcome(e.key, "sent", provider_id=message_id) for e in batch.envelopes]
        return sent + refused


def _translate(exc: http_errors.HTTPError) -> Exception:
    status = exc.status_code
    body = exc.body.decode("utf-8", "replace") if isinstance(exc.body, bytes) else str(exc.body)
    message = f"SendGrid answered {status}: {body[:500]}"
    if status in (401, 403):
        return ConfigError(f"{message}: check MAILER_SENDGRID_API_KEY and its permissions")
    if status in _TRANSIENT_STATUS:
        return TransientDeliveryError(message, retry_after=_retry_after(exc.headers))
    return PermanentDeliveryError(message)


def _retry_after(headers: Any) -> float | None:
    """Seconds to wait from ``Retry-After`` (seconds or a date) or ``X-RateLimit-Reset`` (epoch)."""
    if headers is None:
        return None
    value = headers.get("Retry-After")
    if value:
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    reset = headers.get("X-RateLimit-Reset")
    if reset:
        try:
            return max(0.0, float(reset) - time.time())
        except ValueError:
            return None
    return None
