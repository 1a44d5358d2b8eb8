"""SMTP with ``smtplib``: a few persistent connections, one message per reader.

Each reader gets the same message an outbox file holds (multipart/alternative,
text first, list headers, a unique Message-ID), spliced from the batch built once
(``message.Compiled``), DKIM-signed with ``dkimpy`` when a key is configured, and sent
from its own envelope sender when a bounce domain is (VERP, ``mailer.delivery.verp``), so
that a bounce names the copy it is about. What the server answers about one reader (to
RCPT TO, or to the message, which has that reader alone) is about that reader only:
"later" (4xx) defers them, "never" (5xx) fails them, and a 5.1.x "no such address" is a
hard bounce. What it answers about us (421 "closing", our sender refused) ends the batch:
what went out is recorded, the rest go back to the queue. Losing the connection
mid-message makes that message ``unknown``.

Where the server offers PIPELINING (RFC 2920), MAIL, RCPT and DATA go out together and
their answers are read in turn, each as it would be one by one: one round trip less than
three for each message, and fewer wake-ups of the server.

A batch goes out over up to ``MAILER_SMTP_CONNECTIONS`` connections at once (one thread
each: the time goes into waiting for the server's answers), kept open for the next batch
of this process. A kept connection the server has closed since (idle too long, or after
as many messages as it takes on one connection) is found at MAIL FROM, before anything of
the message went out, and is replaced at once; the count the server closed at is
remembered, and later connections are renewed before they reach it.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import socket
import ssl
import threading
import weakref
from collections.abc import Iterator

from mailer.delivery import POLICY_REFUSAL, Outcome
from mailer.delivery.dkim import DkimKey
from mailer.delivery.identity import Identity
from mailer.delivery.message import Batch, Compiled, Envelope, check_batch
from mailer.delivery.verp import Verp
from mailer.errors import ConfigError, TransientDeliveryError, UnsafeHeaderValue

__all__ = ["SmtpBackend"]


class _Closed(Exception):
    """The connection was closed (or is closing: 421) before the message's data went out."""


class _Connection:
    """One SMTP session and how many messages it has carried."""

    def __init__(self, smtp: smtplib.SMTP) -> None:
        self.smtp = smtp
        self.sent = 0
        # Opened for the message at hand: if the server closes it at once, it means it.
        self.fresh = True
        self.pipelining = smtp.has_extn("pipelining")

    def transaction(self, mail_from: str, rcpt: str, message: bytes) -> None:
        """MAIL, RCPT, DATA for one reader; ``_Closed`` while nothing of the message has gone
        out, smtplib's exceptions for an answer, ``OSError`` and ``SMTPServerDisconnected``
        once it may have."""
        smtp = self.smtp
        commands = [f"MAIL FROM:{_quoted(mail_from)}", f"RCPT TO:{_quoted(rcpt)}", "DATA"]
        try:
            if self.pipelining:
                smtp.send("".join(f"{command}\r\n" for command in commands))
            code, reply = self._answer(commands[0])
            if code == 421:
                raise _Closed(_reason(code, reply))
            if code != 250:
                self._reset(commands[1:])
                raise smtplib.SMTPSenderRefused(code, reply, mail_from)
            code, reply = self._answer(commands[1])
            if code not in (250, 251):
                self._reset(commands[2:])
                raise smtplib.SMTPRecipientsRefused({rcpt: (code, reply)})
            code, reply = self._answer(commands[2])
        except (smtplib.SMTPServerDisconnected, ConnectionError) as exc:
            raise _Closed(str(exc)) from exc
        if code != 354:
            self._reset([])
            raise smtplib.SMTPDataError(code, reply)
        # From here on the message may reach the server: a lost connection is "unknown".
        smtp.send(_stuffed(message) + b".\r\n")  # the message ends with CRLF
        code, reply = smtp.getreply()
        if code != 250:
            raise smtplib.SMTPDataError(code, reply)
        self.sent += 1

    def _answer(self, command: str) -> tuple[int, bytes]:
        """The answer to ``command``, sent now unless it went out pipelined."""
        if not self.pipelining:
            self.smtp.putcmd(command)
        return self.smtp.getreply()

    def _reset(self, unread: list[str]) -> None:
        """End a refused transaction: read the answers still due to pipelined commands, then
        RSET. A server that took DATA all the same (354) is left: it waits for a message."""
        with contextlib.suppress(smtplib.SMTPException, OSError):
            code = 0
            for _ in unread if self.pipelining else ():
                code, _reply = self.smtp.getreply()
            if code == 354:
                self.smtp.close()
                self.sent = 0  # closed by us: not the server's limit of messages to learn
            else:  # if this fails, the next transaction finds the connection closed
                self.smtp.rset()

    def close(self) -> None:
        try:
            self.smtp.quit()
        except (smtplib.SMTPException, OSError):
            self.smtp.close()


def _drop(idle: list[_Connection]) -> None:
    """Close the sockets of kept connections, without a word to the server."""
    while idle:
        idle.pop().smtp.close()


# An address that smtplib's quoteaddr gives back as it is, in angle brackets: a dot-atom
# local part and a domain of plain labels.
_ATEXT = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_PLAIN_ADDRESS = re.compile(rf"{_ATEXT}(?:\.{_ATEXT})*@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*")


def _quoted(address: str) -> str:
    """``<address>`` as smtplib's ``mail()`` and ``rcpt()`` write it, without parsing a
    plain address again (``email.utils.parseaddr`` took a tenth of a worker's CPU); a line
    break is refused as their ``putcmd`` refuses it."""
    if _PLAIN_ADDRESS.fullmatch(address):
        return f"<{address}>"
    quoted = smtplib.quoteaddr(address)
    if "\r" in quoted or "\n" in quoted:
        raise ValueError(f"an address with a line break: {quoted!r}")
    return quoted


# A line that starts with a dot gets one more (RFC 5321 4.5.2), as smtplib's data() does.
_DOT = re.compile(rb"(?m)^\.")
_NEWLINE_DOT = re.compile(rb"\n\.")


def _stuffed(message: bytes) -> bytes:
    """``message`` dot-stuffed. Most have no line that starts with a dot, and looking for one
    costs a few times less than the regular expression's pass over every line (which took
    a tenth of a worker's time per message of the sample post); ``re`` finds one in a third
    of the time ``b"\\n." in message`` takes (15 µs against 45 for the sample post)."""
    if message.startswith(b".") or _NEWLINE_DOT.search(message):
        return _DOT.sub(b"..", message)
    return message


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
        connections: int = 2,
    ) -> None:
        if username and not password:
            raise ConfigError("MAILER_SMTP_USERNAME is set: set MAILER_SMTP_PASSWORD too")
        self.host, self.port, self.security = host, port, security
        self.username, self.password = username, password
        self.timeout = timeout
        self.dkim_key = dkim_key
        self.verp = verp
        self.identity = identity
        self.connections = connections
        self._idle: list[_Connection] = []  # open, between batches
        # A backend dropped without close() (a Runtime's end, the process's) drops its sockets.
        weakref.finalize(self, _drop, self._idle)
        self._lock = threading.Lock()
        # Messages the server took on one connection before it closed it; 0: no limit seen.
        self.per_connection = 0
        self.local_hostname = ""

    def _connect(self) -> _Connection:
        try:
            if self.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host,
                    self.port,
                    self._local_hostname(),
                    timeout=self.timeout,
                    context=ssl.create_default_context(),
                )
            else:
                smtp = smtplib.SMTP(
                    self.host, self.port, self._local_hostname(), timeout=self.timeout
                )
                if self.security == "starttls":
                    smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self.password)
            smtp.ehlo_or_helo_if_needed()
        except smtplib.SMTPAuthenticationError as exc:
            raise ConfigError(
                f"SMTP login refused: check MAILER_SMTP_USERNAME and MAILER_SMTP_PASSWORD ({exc})"
            ) from exc
        except (OSError, smtplib.SMTPException) as exc:
            where = f"{self.host}:{self.port}"
            raise TransientDeliveryError(f"cannot reach the SMTP server {where}: {exc}") from exc
        return _Connection(smtp)

    def _local_hostname(self) -> str:
        """The name EHLO gives, looked up once (smtplib would ask DNS for every connection)."""
        if not self.local_hostname:
            self.local_hostname = socket.getfqdn()
        return self.local_hostname

    def _take(self) -> _Connection:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return self._connect()

    def _give_back(self, connection: _Connection) -> None:
        with self._lock:
            if len(self._idle) < self.connections:
                connection.fresh = False
                self._idle.append(connection)
                return
        connection.close()

    def close(self) -> None:
        """Say goodbye (QUIT) on the kept connections and close them."""
        with self._lock:
            idle = self._idle[:]
            self._idle.clear()
        for connection in idle:
            connection.close()

    def send(self, batch: Batch) -> list[Outcome]:
        check_batch(batch)  # before connecting: nothing of an unsafe batch goes out
        compiled = Compiled(batch, self.identity)
        first = self._take()  # can we reach the server at all? (else the batch waits)
        envelopes = iter(batch.envelopes)
        outcomes: dict[str, Outcome] = {}
        stop = threading.Event()
        more = min(self.connections, len(batch.envelopes)) - 1
        threads = [
            threading.Thread(target=self._run, args=(None, compiled, envelopes, outcomes, stop))
            for _ in range(more)
        ]
        for thread in threads:
            thread.start()
        try:
            self._run(first, compiled, envelopes, outcomes, stop)
        finally:
            for thread in threads:
                thread.join()
        return [outcomes[e.key] for e in batch.envelopes if e.key in outcomes]

    def _run(
        self,
        connection: _Connection | None,
        compiled: Compiled,
        envelopes: Iterator[Envelope],
        outcomes: dict[str, Outcome],
        stop: threading.Event,
    ) -> None:
        """Send the envelopes this thread takes over one connection (``None``: its own, and
        none if it cannot open one: the other threads take the envelopes)."""
        if connection is None:
            try:
                connection = self._take()
            except (TransientDeliveryError, ConfigError):
                return
        broken = False  # this connection failed us: closed, not kept
        try:
            while not stop.is_set():
                with self._lock:
                    envelope = next(envelopes, None)
                if envelope is None:
                    break
                connection, outcome = self._deliver(connection, compiled, envelope)
                outcomes[envelope.key] = outcome
                if connection is None or outcome.status in ("retry", "unknown"):
                    stop.set()  # the server refuses us or the link is gone: the rest wait
                    broken = True
                    break
        finally:
            if connection is not None and not broken:
                self._give_back(connection)
            elif connection is not None:
                connection.close()

    def _deliver(
        self, connection: _Connection, compiled: Compiled, envelope: Envelope
    ) -> tuple[_Connection | None, Outcome]:
        """One reader's message, on ``connection`` or on the new one that replaces it when
        the server closed it before this message; the connection to go on with."""
        batch = compiled.batch
        try:
            message = compiled.to_bytes(envelope)
        except UnsafeHeaderValue as exc:
            return connection, Outcome(envelope.key, "failed", error=f"not sent: {exc}")
        if self.dkim_key is not None:
            message = self.dkim_key.sign(message) + message
        mail_from = batch.sender.email if self.verp is None else self.verp.sender_for(envelope.key)
        try:
            if self.per_connection and connection.sent >= self.per_connection:
                connection.close()  # before the server would close it
                connection = self._connect()
            fresh, connection.fresh = connection.fresh, False
            try:
                connection.transaction(mail_from, envelope.email, message)
            except _Closed:
                if fresh:  # a new connection refused at once: the server's trouble
                    raise
                if connection.sent:
                    self.per_connection = connection.sent
                connection.close()
                connection = self._connect()
                connection.transaction(mail_from, envelope.email, message)
        except _Closed as exc:
            return connection, Outcome(envelope.key, "retry", error=str(exc))
        except (TransientDeliveryError, ConfigError) as exc:  # reconnecting failed
            return None, Outcome(envelope.key, "retry", error=str(exc))
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = exc.recipients.get(envelope.email, (550, b""))
            return connection, _refused(envelope.key, code, text)
        except smtplib.SMTPDataError as exc:
            return connection, _refused(envelope.key, exc.smtp_code, exc.smtp_error)
        except smtplib.SMTPSenderRefused as exc:  # our address: the same for everyone
            error = _reason(exc.smtp_code, exc.smtp_error)
            return connection, Outcome(envelope.key, "retry", error=error)
        except (TimeoutError, smtplib.SMTPServerDisconnected, OSError) as exc:
            # This one may or may not have gone out.
            return connection, Outcome(envelope.key, "unknown", error=f"connection lost: {exc}")
        message_id = batch.message_id(envelope)
        return connection, Outcome(envelope.key, "sent", provider_id=message_id)


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
