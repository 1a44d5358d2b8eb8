"""The bounce mailbox over IMAP: read each message, record it, file it away.

Every message in ``MAILER_BOUNCE_IMAP_FOLDER`` is read (without marking it seen), handed
to ``handle`` (which records it and commits), then moved: to
``MAILER_BOUNCE_DONE_FOLDER`` once read, to ``MAILER_BOUNCE_UNPARSEABLE_FOLDER`` if it is
no bounce or complaint. Nothing is deleted but by the move itself (IMAP ``MOVE``, or
``COPY`` + ``\\Deleted`` + ``EXPUNGE`` where the server lacks it), and only after the
record commits: a crash in between leaves the message to be read again, and its event id
makes the second reading change nothing. Folders are created when missing. TLS
(``ssl`` or ``starttls``) always, but to a loopback host (settings refuse plain IMAP
beyond it); the server's certificate is checked against the system's CAs and
``MAILER_BOUNCE_IMAP_CA_FILE`` (a server with a certificate from its owner's own CA).
"""

from __future__ import annotations

import contextlib
import imaplib
import ssl
from collections.abc import Callable
from dataclasses import dataclass

from mailer.config import Settings
from mailer.errors import ConfigError, MailerError

__all__ = ["BounceMailbox", "MailboxError"]

UNPARSEABLE = "unparseable"


class MailboxError(MailerError):
    """The IMAP server refused or failed (the message says what it answered)."""


@dataclass(frozen=True)
class BounceMailbox:
    host: str
    port: int
    security: str
    username: str
    password: str
    folder: str
    done_folder: str
    unparseable_folder: str
    timeout: float = 30.0
    ca_file: str = ""  # trusted beside the system's CAs

    @classmethod
    def from_settings(cls, settings: Settings) -> BounceMailbox:
        if not settings.bounce_imap_host:
            raise ConfigError("no bounce mailbox: set MAILER_BOUNCE_IMAP_HOST (and its login)")
        return cls(
            settings.bounce_imap_host,
            settings.bounce_imap_port,
            settings.bounce_imap_security,
            settings.bounce_imap_username,
            settings.bounce_imap_password,
            settings.bounce_imap_folder,
            settings.bounce_done_folder,
            settings.bounce_unparseable_folder,
            settings.delivery_timeout,
            settings.bounce_imap_ca_file,
        )

    def fetch(
        self,
        handle: Callable[[bytes], str],
        progress: Callable[[int, int], None] | None = None,
    ) -> list[str]:
        """Hand each message to ``handle`` (which returns what it was, ``"unparseable"``
        for one it could not read) and move it; returns the outcomes in order."""
        imap = self._connect()
        try:
            self._ensure(imap, self.done_folder)
            self._ensure(imap, self.unparseable_folder)
            _ok(imap.select(_quoted(self.folder)), f"select {self.folder}")
            uids = _ok(imap.uid("SEARCH", "ALL"), "search")[0].split()
            movable = b"MOVE" in _capabilities(imap)
            outcomes = []
            for done, uid in enumerate(uids, 1):
                fetched = _ok(imap.uid("FETCH", uid, "(BODY.PEEK[])"), f"fetch {uid!r}")
                data = next((part[1] for part in fetched if isinstance(part, tuple)), None)
                outcome = UNPARSEABLE if data is None else handle(data)
                target = self.unparseable_folder if outcome == UNPARSEABLE else self.done_folder
                self._move(imap, uid, target, movable)
                outcomes.append(outcome)
                if progress is not None:
                    progress(done, len(uids))
            if not movable:
                _ok(imap.expunge(), "expunge")
            return outcomes
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailboxError(f"the bounce mailbox {self.host}:{self.port}: {exc}") from exc
        finally:
            with contextlib.suppress(imaplib.IMAP4.error, OSError):
                imap.logout()

    def _connect(self) -> imaplib.IMAP4:
        where = f"{self.host}:{self.port}"
        context = ssl.create_default_context()
        if self.ca_file:
            try:
                context.load_verify_locations(cafile=self.ca_file)
            except (OSError, ssl.SSLError) as exc:
                raise ConfigError(
                    f"MAILER_BOUNCE_IMAP_CA_FILE {self.ca_file!r}: no PEM certificate to "
                    f"read there ({exc})"
                ) from exc
        try:
            if self.security == "ssl":
                imap: imaplib.IMAP4 = imaplib.IMAP4_SSL(
                    self.host, self.port, ssl_context=context, timeout=self.timeout
                )
            else:
                imap = imaplib.IMAP4(self.host, self.port, timeout=self.timeout)
        except (imaplib.IMAP4.error, OSError) as exc:
            raise MailboxError(f"cannot reach the bounce mailbox {where}: {exc}") from exc
        if self.security == "starttls":
            try:
                imap.starttls(ssl_context=context)
            except (imaplib.IMAP4.error, OSError) as exc:
                with contextlib.suppress(OSError):  # a failed handshake closed it already
                    imap.shutdown()  # before the login: the password never crosses in clear
                raise MailboxError(
                    f"cannot reach the bounce mailbox {where}: STARTTLS failed ({exc}); for a "
                    "server that speaks TLS from the start, set "
                    "MAILER_BOUNCE_IMAP_SECURITY=ssl and its port (993)"
                ) from exc
        try:
            imap.login(self.username, self.password)
        except imaplib.IMAP4.error as exc:
            imap.logout()
            raise ConfigError(
                f"the bounce mailbox {where} refused the login: check "
                f"MAILER_BOUNCE_IMAP_USERNAME and MAILER_BOUNCE_IMAP_PASSWORD ({exc})"
            ) from exc
        return imap

    @staticmethod
    def _ensure(imap: imaplib.IMAP4, folder: str) -> None:
        listed = _ok(imap.list('""', _quoted(folder)), f"list {folder}")
        if not any(item for item in listed if item):
            _ok(imap.create(_quoted(folder)), f"create {folder}")

    @staticmethod
    def _move(imap: imaplib.IMAP4, uid: bytes, folder: str, movable: bool) -> None:
        number = uid.decode("ascii")  # the same bytes on the wire; imaplib's stubs take str
        if movable:
            _ok(imap.uid("MOVE", number, _quoted(folder)), f"move {uid!r}")
            return
        _ok(imap.uid("COPY", number, _quoted(folder)), f"copy {uid!r}")
        _ok(imap.uid("STORE", number, "+FLAGS", "(\\Deleted)"), f"flag {uid!r}")


def _capabilities(imap: imaplib.IMAP4) -> set[bytes]:
    """What the server offers once logged in (more than it said before the login)."""
    return set(_ok(imap.capability(), "say what it can")[0].upper().split())


def _ok(answer: tuple[str, list], what: str) -> list:
    status, data = answer
    if status != "OK":
        raise MailboxError(f"the bounce mailbox refused to {what}: {data!r}")
    return data


def _quoted(folder: str) -> str:
    """An IMAP quoted string (RFC 3501): the folder settings may hold spaces."""
    if any(ord(c) < 32 or ord(c) > 126 for c in folder):
        raise ConfigError(f"bounce mailbox folder {folder!r}: use printable ASCII")
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'
