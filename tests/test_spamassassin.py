"""SpamAssassin (Debian's, local tests only: ``-L``) scores what readers get at 0 or below.

The sample newsletter as `mailer demo` writes it to the outbox, and the confirmation
email. Before, the preheader's white text on the page's grey tripped
``HTML_FONT_LOW_CONTRAST``. `make test-programs` installs spamassassin; without it this fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import main
from mailer.config import Settings
from mailer.content.render import Renderer
from mailer.runtime import Runtime
from mailer.sending.confirmation import ConfirmationMail
from tests.conftest import SAMPLE_POST

SITE = {"MAILER_PUBLIC_URL": "https://mail.example.org", "MAILER_SITE_URL": "https://example.org"}


def spam_score(message: bytes, home: Path) -> tuple[float, list[str]]:
    """SpamAssassin's score and rule names for ``message``, with no network rule."""
    binary = shutil.which("spamassassin")
    assert binary, "Debian's spamassassin is missing: `make test-programs` installs it"
    result = subprocess.run(
        [binary, "-L"],
        input=message,
        capture_output=True,
        check=True,
        env={**os.environ, "HOME": str(home)},  # its user_prefs go there, not to ~
        timeout=120,
    )
    head = result.stdout.split(b"\n\n", 1)[0].decode("ascii", "replace")
    status = re.search(r"^X-Spam-Status: .*?(?=^\S)", head + "\nEnd", re.M | re.S)
    assert status, result.stdout[:2000]
    text = " ".join(status[0].split())
    score = float(re.search(r"score=(-?[\d.]+)", text)[1])  # type: ignore[index]
    rules = re.search(r"tests=(\S*)", text)[1].split(",")  # type: ignore[index]
    return score, rules


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


def test_the_sample_newsletter_scores_zero_or_below(home: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["demo", str(SAMPLE_POST)], env=SITE)
    assert result.exit_code == 0, result.output
    [first, *_] = sorted((tmp_path / "outbox").glob("*.eml"))
    score, rules = spam_score(first.read_bytes(), home)
    assert score <= 0, rules
    assert "HTML_FONT_LOW_CONTRAST" not in rules and "MSGID_SHORT" not in rules


def test_the_confirmation_email_scores_zero_or_below(
    settings: Settings, home: Path, tmp_path: Path
) -> None:
    s = settings.model_copy(update={"outbox_dir": tmp_path / "outbox"})
    send = ConfirmationMail(s, Renderer(s), Runtime(s).backend)
    send(7, "ada@example.org", "Ada", "https://mail.example.org/confirm/7.abcdefghijklmnop")
    [message] = (tmp_path / "outbox").glob("*.eml")
    score, rules = spam_score(message.read_bytes(), home)
    assert score <= 0, rules
    assert "MSGID_SHORT" not in rules
