"""SMTP with ``smtplib``: one connection per batch, one message per reader.

Each reader gets the same message an outbox file holds (multipart/alternative,
text first, list headers, a unique Message-ID), DKIM-signed with ``dkimpy`` when a
key is configured. A reader whose copy would be unsafe (``to_bytes`` refuses it) and
a recipient the server refuses fail alone; losing the
connection mid-batch, or a "try later" answer to the message, ends the batch early:
what went out is recorded, a message in flight is ``unknown``, the rest go back to the
queue. A reader refused for now (greylisting, a full mailbox) goes back alone.
"""

from __future__ import annotations

import smtplib
import ssl
from pathlib import Path

import dkim

from mailer.delivery import Outcome
from mailer.errors import ConfigError, TransientDeliveryError, UnsafeHeaderValue
from mailer.message import Batch, check_batch, to_bytes

__all__ = ["DkimKey", "SmtpBackend"]


class DkimKey:
    def __init__(self, private_key_file: Path, selector: str, domain: str) -> None:
        try:
            self.key = private_key_file.read_bytes()
        except OSError as exc:
            setting = f"MAILER_DKIM_PRIVATE_KEY_FILE={private_key_file}"
            raise ConfigError(f"{setting}: {exc.strerror}") from exc
        if not domain:
            raise ConfigError("MAILER_DKIM_PRIVATE_KEY_FILE is set: set MAILER_DKIM_DOMAIN too")
        self.selector = selector.encode()
        self.domain = domain.encode()

    def sign(self, message: bytes) -> bytes:
        headers = [b"from", b"to", b"subject", b"date", b"message-id", b"list-unsubscribe",
                   b"list-unsubscribe-post", b"mime-version", b"content-type"]  # fmt: skip
        return dkim.sign(message, self.selector, self.domain, self.key, include_headers=headers)


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
    ) -> None:
        self.host, self.port, self.security = host, port, security
        self.username, self.password = username, password
        self.timeout = timeout
        self.dkim_key = dkim_key

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
                    message = to_bytes(batch, envelope)
                except UnsafeHeaderValue as exc:
                    outcomes.append(Outcome(envelope.key, "failed", error=f"not sent: {exc}"))
                    continue
                if self.dkim_key is not None:
                    message = self.dkim_key.sign(message) + message
                try:
                    smtp.sendmail(batch.sender.email, [envelope.email], message)
                except smtplib.SMTPRecipientsRefused as exc:
                    code, text = exc.recipients.get(envelope.email, (550, b""))
                    if 400 <= code < 500:  # greylisted or over quota: this reader later
                        continue
                    outcomes.append(Outcome(envelope.key, "failed", error=_reason((code, text))))
                except (smtplib.SMTPDataError, smtplib.SMTPSenderRefused) as exc:
                    if 400 <= exc.smtp_code < 500:  # "try later": this one and the rest
                        return outcomes
                    error = _reason((exc.smtp_code, exc.smtp_error))
                    outcomes.append(Outcome(envelope.key, "failed", error=error))
                except (TimeoutError, smtplib.SMTPServerDisconnected, OSError):
                    # This one may or may not have gone out; the rest are retried.
                    outcomes.append(Outcome(envelope.key, "unknown", error="connection lost"))
                    return outcomes
                else:
                    message_id = batch.message_id(envelope)
                    outcomes.append(Outcome(envelope.key, "sent", provider_id=message_id))
        finally:
            try:
                smtp.quit()
            except (smtplib.SMTPException, OSError):
                smtp.close()
        return outcomes


def _reason(code_and_text: tuple[int, bytes | str]) -> str:
    code, text = code_and_text
    text = text.decode("utf-8", "replace") if isinstance(text, bytes) else text
    return f"{code} {text}".strip()
