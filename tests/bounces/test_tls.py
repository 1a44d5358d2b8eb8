"""`mailer bounces fetch` over IMAP with TLS, and never plain IMAP beyond loopback.

Dovecot speaks implicit TLS here (and, in a second server, requires STARTTLS on the IMAP
port), with a certificate from a CA made in the test: the fetch trusts it through
MAILER_BOUNCE_IMAP_CA_FILE, and without that setting refuses the server (the system's CAs
do not know it) and leaves the mailbox as it was.
"""

from __future__ import annotations

from collections.abc import Iterator
from string import Template

import pytest
from click.testing import CliRunner, Result

from mailer.cli import main
from tests.bounces.conftest import Dovecot
from tests.bounces.test_mailbox import DATA
from tests.test_smtp import SECRET


@pytest.fixture(autouse=True)
def _database(database_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_DATABASE_URL", database_url)


@pytest.fixture
def tls_mailbox(tls_dovecot: Dovecot) -> Iterator[Dovecot]:
    """The TLS Dovecot with two messages in its inbox: a bounce and an out-of-office."""
    yield from _filled(tls_dovecot)


@pytest.fixture
def starttls_mailbox(starttls_dovecot: Dovecot) -> Iterator[Dovecot]:
    """The same two messages, in the Dovecot that requires STARTTLS."""
    yield from _filled(starttls_dovecot)


def _filled(server: Dovecot) -> Iterator[Dovecot]:
    server.empty()
    fill = {"verp": "bounces@example.com", "reader": "a@example.org", "message_id": "<1@x>"}
    server.append(
        [
            Template((DATA / name).read_text()).substitute(fill).replace("\n", "\r\n").encode()
            for name in ("postfix-user-unknown.eml", "out-of-office.eml")
        ]
    )
    yield server
    server.empty()


def _fetch(monkeypatch: pytest.MonkeyPatch, host: str, port: int, **more: str) -> Result:
    for name, value in {
        "SECRET_KEYS": SECRET,
        "BOUNCE_IMAP_HOST": host,
        "BOUNCE_IMAP_PORT": str(port),
        "BOUNCE_IMAP_USERNAME": "bounces",
        "BOUNCE_IMAP_PASSWORD": "a-test-password",
        **more,
    }.items():
        monkeypatch.setenv(f"MAILER_{name}", value)
    return CliRunner().invoke(main, ["bounces", "fetch"])


@pytest.fixture(params=["ssl", "starttls"])
def secured(request: pytest.FixtureRequest) -> tuple[str, Dovecot]:
    """Implicit TLS (imaps), and STARTTLS on the IMAP port: each with its own Dovecot."""
    server = {"ssl": "tls_mailbox", "starttls": "starttls_mailbox"}[request.param]
    return request.param, request.getfixturevalue(server)


def test_fetch_over_tls_trusts_the_configured_ca(
    secured: tuple[str, Dovecot], monkeypatch: pytest.MonkeyPatch
) -> None:
    security, mailbox = secured
    result = _fetch(
        monkeypatch,
        "127.0.0.1",
        mailbox.port,
        BOUNCE_IMAP_SECURITY=security,
        BOUNCE_IMAP_CA_FILE=str(mailbox.ca_file),
    )
    assert result.exit_code == 0, result.output
    assert "2 messages read" in result.output
    assert mailbox.folder("INBOX") == []
    assert len(mailbox.folder("Processed")) == len(mailbox.folder("Unparseable")) == 1


def test_a_server_certificate_no_trusted_ca_signed_is_refused(
    secured: tuple[str, Dovecot], monkeypatch: pytest.MonkeyPatch
) -> None:
    security, mailbox = secured
    result = _fetch(monkeypatch, "127.0.0.1", mailbox.port, BOUNCE_IMAP_SECURITY=security)
    assert result.exit_code != 0
    assert "CERTIFICATE_VERIFY_FAILED" in result.output
    assert len(mailbox.folder("INBOX")) == 2


def test_a_server_without_starttls_gets_no_password(
    dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Asked for STARTTLS, a server that does not offer it is left before the login."""
    result = _fetch(monkeypatch, "127.0.0.1", dovecot.port, BOUNCE_IMAP_SECURITY="starttls")
    assert result.exit_code != 0
    said = " ".join(result.output.split())
    assert f"cannot reach the bounce mailbox 127.0.0.1:{dovecot.port}" in said
    assert "STARTTLS" in said


def test_a_missing_ca_file_is_named(tls_mailbox: Dovecot, monkeypatch: pytest.MonkeyPatch) -> None:
    result = _fetch(
        monkeypatch,
        "127.0.0.1",
        tls_mailbox.port,
        BOUNCE_IMAP_SECURITY="ssl",
        BOUNCE_IMAP_CA_FILE="/nonexistent/ca.pem",
    )
    assert result.exit_code != 0
    assert "MAILER_BOUNCE_IMAP_CA_FILE '/nonexistent/ca.pem'" in result.output


def test_plain_imap_beyond_loopback_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    """The password would cross the network in clear text: refused before any connection."""
    result = _fetch(monkeypatch, "imap.example.org", 143, BOUNCE_IMAP_SECURITY="none")
    assert result.exit_code != 0
    assert "plain IMAP only to a loopback host" in " ".join(result.output.split())
