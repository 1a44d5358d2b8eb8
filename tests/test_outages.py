"""Outages as the operator meets them: one line that says what happened, and a campaign that
can go on. The broker and the database go away for real (through a relay the test cuts,
never the shared servers themselves); `mailer send` runs as a real process."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from mailer.cli.send import follow_campaign
from mailer.config import Settings
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.errors import MailerError
from mailer.runtime import Runtime
from mailer.sending.dispatch import create_campaign
from mailer.store.ledger import CampaignState, move
from tests.test_send_cli import ok, query, run
from tests.test_smtp import free_port

POST = "---\ntitle: Outage weekly\n---\nHello.\n"
REAL = {
    "MAILER_SECRET_KEYS": "a-real-secret-for-the-outage-tests-32b",
    "MAILER_PUBLIC_URL": "https://mail.example.org",
}


class Relay:
    """A loopback TCP relay to a real server, which the test can cut: to its clients the
    server goes away (connections dropped, new ones closed at once) while it keeps running.
    ``connections``: how many it relays before it cuts itself."""

    def __init__(self, port: int, connections: int | None = None) -> None:
        self.target = ("127.0.0.1", port)
        self.left = connections
        self.up = True
        self.open: list[socket.socket] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return  # closed
            if not self.up or self.left == 0:
                client.close()
                continue
            if self.left is not None:
                self.left -= 1
            server = socket.create_connection(self.target)
            self.open += [client, server]
            for source, sink in ((client, server), (server, client)):
                threading.Thread(target=_pump, args=(source, sink), daemon=True).start()

    def cut(self) -> None:
        self.up = False
        for sock in self.open:
            _drop(sock)
        self.open.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self.cut()
        _drop(self.listener)


def _pump(source: socket.socket, sink: socket.socket) -> None:
    try:
        while data := source.recv(65536):
            sink.sendall(data)
    except OSError:
        pass
    _drop(sink)


def _drop(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    sock.close()


@pytest.fixture
def relays() -> Iterator[list[Relay]]:
    made: list[Relay] = []
    yield made
    for relay in made:
        relay.close()


@pytest.fixture(scope="module")
def site_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite database with two confirmed readers, and a post."""
    folder = tmp_path_factory.mktemp("site")
    ok("db", "upgrade", cwd=folder)
    for address in ("ada@example.org", "grace@example.org"):
        ok("subscribers", "add", address, "--consent-source", "test", cwd=folder)
    (folder / "post.md").write_text(POST, "utf-8")
    return folder


@pytest.fixture
def site(site_template: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(site_template, tmp_path / "site"))


def one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("error: ")
    return result.stderr


def test_send_with_the_broker_down_is_one_line_and_starts_nothing(site: Path) -> None:
    broker = f"redis://127.0.0.1:{free_port()}/15"  # nothing listens there
    result = run("send", "post.md", cwd=site, env={"MAILER_BROKER_URL": broker})
    assert "cannot reach the broker" in one_line_error(result)
    assert query(site, "SELECT COUNT(*) FROM campaigns") == [(0,)]


def test_a_broker_lost_while_handing_out_leaves_the_campaign_paused_to_resume(
    site: Path, relays: list[Relay]
) -> None:
    relays.append(Relay(6379, connections=1))  # the check gets through; nothing after it
    broker = f"redis://127.0.0.1:{relays[0].port}/15"
    result = run("send", "post.md", cwd=site, env={"MAILER_BROKER_URL": broker})
    assert "`mailer campaigns resume 1`" in one_line_error(result)
    assert query(site, "SELECT status FROM campaigns") == [("paused",)]
    assert query(site, "SELECT status, COUNT(*) FROM deliveries GROUP BY 1") == [("queued", 2)]
    # Resumed while the broker is still away: one line, and the campaign stays paused.
    again = run("campaigns", "resume", "1", cwd=site, env={"MAILER_BROKER_URL": broker})
    assert "cannot reach the broker" in one_line_error(again)
    assert query(site, "SELECT status FROM campaigns") == [("paused",)]


def test_a_dkim_key_that_does_not_parse_is_one_line_before_any_campaign(site: Path) -> None:
    (site / "dkim.pem").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n", "utf-8")
    env = {
        **REAL,
        "MAILER_BACKEND": "smtp",
        "MAILER_SMTP_HOST": "127.0.0.1",
        "MAILER_SMTP_PORT": str(free_port()),  # nothing listens: nothing can go out anyway
        "MAILER_SMTP_SECURITY": "none",
        "MAILER_MAX_RETRIES": "0",
        "MAILER_DKIM_PRIVATE_KEY_FILE": "dkim.pem",
        "MAILER_DKIM_DOMAIN": "example.com",
    }
    result = run("send", "post.md", cwd=site, env=env)
    assert "MAILER_DKIM_PRIVATE_KEY_FILE=dkim.pem: not a private key" in one_line_error(result)
    assert query(site, "SELECT COUNT(*) FROM campaigns") == [(0,)]


@pytest.fixture
def watched(
    settings: Settings, database_url: str, tmp_path: Path, relays: list[Relay]
) -> Iterator[tuple[Runtime, Runtime, int]]:
    """A sending campaign, and two runtimes: one through a relay to PostgreSQL (which the
    test cuts), one straight to it."""
    relays.append(Relay(make_url(database_url).port or 5432))
    relayed = make_url(database_url).set(port=relays[0].port)
    through = Runtime(settings.model_copy(update={"database_url": relayed.render_as_string(False)}))
    direct = Runtime(settings.model_copy(update={"database_url": database_url}))
    path = tmp_path / "outage.md"
    path.write_text(POST, "utf-8")
    campaign, _ = create_campaign(through, Renderer(settings).render(load_post(path)), path)
    set_status(direct, campaign.id, CampaignState.SENDING)
    yield through, direct, campaign.id
    through.engine.dispose()
    direct.engine.dispose()


def set_status(rt: Runtime, campaign_id: int, status: CampaignState) -> None:
    with rt.sessions.begin() as session:
        move(session, campaign_id, status)


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_follow_waits_out_a_short_database_outage(
    watched: tuple[Runtime, Runtime, int], relays: list[Relay], capsys: pytest.CaptureFixture
) -> None:
    through, direct, campaign_id = watched
    relays[0].cut()

    def sleep(_seconds: float) -> None:  # while it waits: the database comes back, the send ends
        relays[0].restore()
        set_status(direct, campaign_id, CampaignState.SENT)

    follow_campaign(through, campaign_id, "outage", sleep=sleep)
    out = capsys.readouterr().out
    assert "The database does not answer" in out and "The database answers again." in out


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_follow_gives_up_on_a_long_database_outage_in_one_line(
    watched: tuple[Runtime, Runtime, int], relays: list[Relay]
) -> None:
    through, _, campaign_id = watched
    relays[0].cut()
    with pytest.raises(MailerError) as raised:
        follow_campaign(through, campaign_id, "outage", patience=0)
    assert "\n" not in str(raised.value)
    assert f"`mailer campaigns show {campaign_id} --follow`" in str(raised.value)
