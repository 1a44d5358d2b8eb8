"""SMTP with ``smtplib``: one connection per batch, one message per reader.

Each reader gets the same message an outbox file holds (multipart/alternative,
text first, list headers, a unique Message-ID), DKIM-signed with ``dkimpy`` when a
key is configured, and sent from its own envelope sender when a bounce domain is
(VERP, ``mailer.delivery.verp``), so that a bounce names the copy it is about. What the
server answers about one reader (to RCPT TO, or to the message, which has that reader
alone) is about that reader only: "later" (4xx) defers them, "never" (5xx) fails them,
and a 5.1.x "no such address" is a hard bounce. What it answers about us (421
"closing", our sender refused) ends the batch: what went out is recorded, the rest go
back to the queue. Losing the connection mid-message makes that message ``unknown``.
"""

from __future__ import annotations

import re
import smtplib
import ssl

from mailer.delivery import POLICY_REFUSAL, Outcome
from mailer.delivery.dkim import DkimKey
from mailer.delivery.identity import Identity
from mailer.delivery.message import Batch, check_batch, to_bytes
from mailer.delivery.verp import Verp
from mailer.errors import ConfigError, TransientDeliveryError, UnsafeHeaderValue

__all__ = ["SmtpBackend"]


class SmtpBackend:
    name = "smtp"

    def __init__(
        self,
        host: str,
        port: int,
        security: str,
        username: str = "",
        password: str = "",
        timeout: float = 30.0,
        dkim_key: DkimKey | None = None,
        verp: Verp | None = None,
        identity: Identity | None = None,
    ) -> None:
        if username and not password:
            raise ConfigError("MAILER_SMTP_USERNAME is set: set MAILER_SMTP_PASSWORD too")
        self.host, self.port, self.security = host, port, security
        self.username, self.password = username, password
        self.timeout = timeout
        self.dkim_key = dkim_key
        self.verp = verp
        self.identity = identity

    def _connect(self) -> smtplib.SMTP:
        context = ssl.create_default_context()
        try:
            if self.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=context
                )
            else:
                smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
                if self.security == "starttls":
                    smtp.starttls(context=context)
            if self.username:
                smtp.login(self.username, self.password)
        except smtplib.SMTPAuthenticationError as exc:
            raise ConfigError(
                f"SMTP login refused: check MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD ({exc})"
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            where = f"{self.host}:{self.port}"
            raise TransientDeliveryError(f"cannot reach the SMTP server {where}: {exc}") from exc
        return smtp

    def send(self, batch: Batch) -> list[Outcome]:
        check_batch(batch)  # before connecting: nothing of an unsafe batch goes out
        smtp = self._connect()
        outcomes: list[Outcome] = []
        try:
            for envelope in batch.envelopes:
                try:
                    message = to_bytes(batch, envelope, self.identity)
                except UnsafeHeaderValue as exc:
                    outcomes.append(Outcome(envelope.key, "failed", error=f"not sent: {exc}"))
                    continue
                if self.dkim_key is not None:
                    message = self.dkim_key.sign(message) + message
                if self.verp is None:
                    mail_from = batch.sender.email
                else:
                    mail_from = self.verp.sender_for(envelope.key)
                try:
                    smtp.sendmail(mail_from, [envelope.email], message)
                except smtplib.SMTPRecipientsRefused as exc:
                    code, text = exc.recipients.get(envelope.email, (550, b""))
                    outcome = _refused(envelope.key, code, text)
                except smtplib.SMTPDataError as exc:
                    outcome = _refused(envelope.key, exc.smtp_code, exc.smtp_error)
                except smtplib.SMTPSenderRefused as exc:  # our address: the same for everyone
                    error = _reason(exc.smtp_code, exc.smtp_error)
                    outcome = Outcome(envelope.key, "retry", error=error)
                except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
                    # This one may or may not have gone out.
                    outcome = Outcome(envelope.key, "unknown", error=f"connection lost: {exc}")
                else:
                    message_id = batch.message_id(envelope)
                    outcome = Outcome(envelope.key, "sent", provider_id=message_id)
                outcomes.append(outcome)
                if outcome.status in ("retry", "unknown"):
                    break  # the connection is gone or refuses us: the rest go back to the queue
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
        return outcomes


# A reply with RFC 3463's enhanced status code (class.subject.detail) after its own code.
_ENHANCED = re.compile(r"[0-9]{3} [245]\.([0-9]{1,3})\.[0-9]{1,3}\b")


def _refused(key: str, code: int, text: bytes | str) -> Outcome:
    """What a refusal of one reader's message means: 421 (closing the connection), the
    server's trouble, not the reader's; other 4xx, this reader later; x.1.x (no such
    mailbox or domain), a hard bounce; x.7.x (policy: taken for spam, blocked), a failure
    about this mail, not the address; any other 5xx, a failure. Without an enhanced code
    a 5xx is a plain failure: "550" alone may be a policy refusal."""
    reason = _reason(code, text)
    if code == 421:
        return Outcome(key, "retry", error=reason)
    if 400 <= code < 500:
        return Outcome(key, "deferred", error=reason)
    enhanced = _ENHANCED.match(reason)
    subject = enhanced[1] if enhanced else ""
    if subject == "1":
        return Outcome(key, "failed", error=reason, bounce="hard")
    if subject == "7":
        return Outcome(key, "failed", error=f"{POLICY_REFUSAL}: {reason}", bounce="block")
    return Outcome(key, "failed", error=reason)


def _reason(code: int, text: bytes | str) -> str:
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {text}".strip()
