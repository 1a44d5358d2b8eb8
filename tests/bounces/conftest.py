"""A real IMAP server for the bounce mailbox: Debian's Dovecot on a loopback port.

Started once per test session with a throwaway configuration and mail store in a temporary
folder, plain IMAP on 127.0.0.1 only (the settings allow no TLS to loopback alone), one
user with a plain-text password. A second one speaks only IMAP over TLS (port 993's
implicit TLS), with a certificate for 127.0.0.1 from a CA made in the test
(``tls_dovecot``). Dovecot will not give a mailbox to root: as root, the mailbox belongs
to Dovecot's own user, otherwise to the user running the tests.
"""

from __future__ import annotations

import datetime
import grp
import imaplib
import ipaddress
import os
import pwd
import shutil
import ssl
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.test_smtp import Mailbox, free_port, smtp_sink

DOVECOT = Path("/usr/sbin/dovecot")


@dataclass(frozen=True)
class Dovecot:
    port: int
    username: str = "bounces"
    password: str = "a-test-password"
    ca_file: Path | None = None  # IMAP over TLS, the server's certificate signed by this CA
    starttls: bool = False  # TLS after STARTTLS on the IMAP port, rather than from the start

    def connect(self) -> imaplib.IMAP4:
        if self.ca_file is None:
            imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        elif self.starttls:
            imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
            imap.starttls(ssl_context=ssl.create_default_context(cafile=self.ca_file))
        else:
            context = ssl.create_default_context(cafile=self.ca_file)
            imap = imaplib.IMAP4_SSL("127.0.0.1", self.port, ssl_context=context, timeout=10)
        try:
            imap.login(self.username, self.password)
        except imaplib.IMAP4.error:
            imap.shutdown()
            raise
        return imap

    def append(self, messages: list[bytes]) -> None:
        """Put ``messages`` into the inbox, as mail arriving."""
        imap = self.connect()
        try:
            for data in messages:
                when = imaplib.Time2Internaldate(time.time())
                assert imap.append("INBOX", None, when, data)[0] == "OK"
        finally:
            imap.logout()

    def folder(self, name: str) -> list[bytes]:
        """The messages in folder ``name``, in order."""
        imap = self.connect()
        try:
            status, _ = imap.select(f'"{name}"', readonly=True)
            if status != "OK":
                return []
            uids = imap.uid("SEARCH", "ALL")[1][0].split()
            return [imap.uid("FETCH", uid, "(BODY.PEEK[])")[1][0][1] for uid in uids]
        finally:
            imap.logout()

    def empty(self) -> None:
        """Every folder emptied (and the extra ones deleted) between tests."""
        imap = self.connect()
        try:
            for line in imap.list()[1]:
                name = line.decode().rsplit(' "." ', 1)[1].strip('"')
                if name != "INBOX":
                    imap.delete(f'"{name}"')
            _, count = imap.select("INBOX")
            if count[0] != b"0":
                imap.store("1:*", "+FLAGS", "(\\Deleted)")
                imap.expunge()
        finally:
            imap.logout()


def _owner() -> tuple[int, int, str, str]:
    """(uid, gid, internal user, login user) Dovecot's processes and mail run as."""
    if os.getuid() != 0:
        name = pwd.getpwuid(os.getuid()).pw_name
        return os.getuid(), os.getgid(), name, name
    internal, login = pwd.getpwnam("dovecot"), pwd.getpwnam("dovenull")
    return internal.pw_uid, grp.getgrgid(internal.pw_gid).gr_gid, "dovecot", login.pw_name


@pytest.fixture(scope="session")
def dovecot() -> Iterator[Dovecot]:
    with _dovecot() as server:
        yield server


@pytest.fixture(scope="session")
def tls_dovecot() -> Iterator[Dovecot]:
    with _dovecot(tls=True) as server:
        yield server


@pytest.fixture(scope="session")
def starttls_dovecot() -> Iterator[Dovecot]:
    with _dovecot(tls=True, starttls=True) as server:
        yield server


@contextmanager
def _dovecot(tls: bool = False, starttls: bool = False) -> Iterator[Dovecot]:
    """Plain IMAP; with ``tls``, implicit TLS (imaps), or STARTTLS required on the IMAP
    port with ``starttls`` too."""
    if not DOVECOT.is_file():
        pytest.fail(f"{DOVECOT} is missing: run `make test-programs` (it installs dovecot-imapd)")
    # Not under pytest's own temporary folder, which only its owner may enter.
    root = Path(tempfile.mkdtemp(prefix="mailer-dovecot-"))
    root.chmod(0o755)
    server = Dovecot(free_port(), ca_file=root / "ca.pem" if tls else None, starttls=starttls)
    tls_settings = "ssl = no"
    listeners = f"""inet_listener imap {{
    address = 127.0.0.1
    port = {server.port}
  }}
  inet_listener imaps {{
    port = 0
  }}"""
    if tls:
        write_certificates(root)
        tls_settings = f"ssl = required\nssl_cert = <{root}/cert.pem\nssl_key = <{root}/key.pem"
    if tls and not starttls:
        listeners = f"""inet_listener imap {{
    port = 0
  }}
  inet_listener imaps {{
    address = 127.0.0.1
    port = {server.port}
  }}"""
    uid, gid, internal, login = _owner()
    for folder in ("mail", "home"):
        (root / folder).mkdir()
        os.chown(root / folder, uid, gid)
    (root / "passwd").write_text(f"{server.username}:{{PLAIN}}{server.password}\n")
    config = root / "dovecot.conf"
    config.write_text(
        f"""
base_dir = {root}/run
state_dir = {root}/state
log_path = {root}/dovecot.log
protocols = imap
listen = 127.0.0.1
{tls_settings}
disable_plaintext_auth = no
auth_mechanisms = plain
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = 1
mail_location = maildir:{root}/mail/%u
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {root}/passwd
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={root}/home/%u
}}
service imap-login {{
  {listeners}
}}
"""
    )
    log = root / "dovecot.log"
    with (root / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            [str(DOVECOT), "-F", "-c", str(config)], stdout=subprocess.DEVNULL, stderr=stderr
        )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                server.connect().logout()
                break
            except (OSError, imaplib.IMAP4.error):
                if process.poll() is not None or time.monotonic() > deadline:
                    said = (root / "stderr.log").read_text()
                    said += log.read_text() if log.exists() else ""
                    pytest.fail(f"Dovecot did not start: {said}")
                time.sleep(0.1)
        yield server
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(root, ignore_errors=True)


def write_certificates(folder: Path) -> None:
    """A CA (ca.pem) and, signed by it, a certificate for 127.0.0.1 (cert.pem, key.pem)."""
    now = datetime.datetime.now(datetime.UTC)

    def build(subject: str, issuer: str, key, signer, ca: bool) -> x509.Certificate:
        public = key.public_key()
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(public)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()),
                critical=False,
            )
        )
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False,
            )
        return builder.sign(signer, hashes.SHA256())

    ca_key = ec.generate_private_key(ec.SECP256R1())
    server_key = ec.generate_private_key(ec.SECP256R1())
    ca = build("mailer test CA", "mailer test CA", ca_key, ca_key, ca=True)
    cert = build("127.0.0.1", "mailer test CA", server_key, ca_key, ca=False)
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca.public_bytes(pem))
    (folder / "cert.pem").write_bytes(cert.public_bytes(pem))
    (folder / "key.pem").write_bytes(
        server_key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )


@pytest.fixture
def mailbox_server(dovecot: Dovecot) -> Iterator[Dovecot]:
    """The session's Dovecot, emptied before and after the test."""
    dovecot.empty()
    yield dovecot
    dovecot.empty()


@pytest.fixture
def smtp_server() -> Iterator[tuple[Mailbox, int]]:
    """aiosmtpd on loopback, keeping each envelope (tests/test_smtp.py's handler)."""
    handler = Mailbox(set())
    with smtp_sink(handler) as port:
        yield handler, port
