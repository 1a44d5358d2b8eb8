"""A real IMAP server for the bounce mailbox: Debian's Dovecot on a loopback port.

Started once per test session with a throwaway configuration and mail store in a temporary
folder, plain IMAP on 127.0.0.1 only (the settings allow no TLS to loopback alone), one
user with a plain-text password. Dovecot will not give a mailbox to root: as root, the
mailbox belongs to Dovecot's own user, otherwise to the user running the tests.
"""

from __future__ import annotations

import grp
import imaplib
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from tests.test_smtp import Mailbox, free_port

DOVECOT = Path("/usr/sbin/dovecot")


@dataclass(frozen=True)
class Dovecot:
    port: int
    username: str = "bounces"
    password: str = "a-test-password"

    def connect(self) -> imaplib.IMAP4:
        imap = imaplib.IMAP4("127.0.0.1", self.port, timeout=10)
        try:
            imap.login(self.username, self.password)
        except imaplib.IMAP4.error:
            imap.shutdown()
            raise
        return imap

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
    if not DOVECOT.is_file():
        pytest.fail(f"{DOVECOT} is missing: run `make browser` (it installs dovecot-imapd)")
    # Not under pytest's own temporary folder, which only its owner may enter.
    root = Path(tempfile.mkdtemp(prefix="mailer-dovecot-"))
    root.chmod(0o755)
    server = Dovecot(free_port())
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
ssl = no
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
  inet_listener imap {{
    address = 127.0.0.1
    port = {server.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
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
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()
