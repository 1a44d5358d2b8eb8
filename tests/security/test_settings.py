"""Settings and posts as an attacker (or a careless operator) would write them."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from click.testing import CliRunner

from mailer.cli import main
from mailer.config import MIN_SECRET_BYTES, load_settings, refuse_local_defaults
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.content.templating import Templates
from mailer.errors import ConfigError, PostError, TemplateError
from mailer.runtime import Runtime

PUBLIC = {"public_url": "https://mail.example.org"}


@pytest.mark.parametrize("secret", ["abc", "x" * (MIN_SECRET_BYTES - 1), "密" * 10])
def test_a_short_secret_is_refused_wherever_local_defaults_are(secret: str) -> None:
    settings = load_settings(secret_keys=[secrets.token_urlsafe(32), secret], **PUBLIC)
    assert "MAILER_SECRET_KEYS" in settings.unsafe_local_defaults()
    backend = load_settings(
        secret_keys=[secret], backend="sendgrid", sendgrid_api_key="SG.x", **PUBLIC
    )
    with pytest.raises(ConfigError, match=f"shorter than {MIN_SECRET_BYTES} bytes"):
        assert Runtime(backend).backend


SECRET = {"secret_keys": ["a-real-secret-for-this-test-long-enough-32"]}
SENDGRID = {"backend": "sendgrid", "sendgrid_api_key": "SG.x"}


@pytest.mark.parametrize(
    ("overrides", "where", "refused"),
    [
        ({}, {"web_app": True, "host": "0.0.0.0"}, ["MAILER_SECRET_KEYS", "MAILER_PUBLIC_URL"]),
        ({}, {"web_app": True, "host": "::1"}, []),
        ({}, {"web_app": True, "host": "localhost"}, []),
        (PUBLIC, {"web_app": True}, ["MAILER_SECRET_KEYS"]),
        (PUBLIC, {}, []),  # the outbox, at a public URL: the links stay on this machine
        (SENDGRID, {}, ["MAILER_SECRET_KEYS"]),
        ({**SENDGRID, **SECRET}, {}, []),  # a confirmation to a local app (tests do this)
        ({**SENDGRID, **SECRET}, {"campaign": True}, ["MAILER_PUBLIC_URL"]),
        ({**SECRET, **PUBLIC}, {"web_app": True, "host": "0.0.0.0", "campaign": True}, []),
    ],
)
def test_local_defaults_in_public_are_refused_by_one_rule(
    overrides: dict[str, object], where: dict[str, object], refused: list[str]
) -> None:
    settings = load_settings(**overrides)
    if not refused:
        refuse_local_defaults(settings, **where)
        return
    with pytest.raises(ConfigError, match=r"^refusing to ") as raised:
        refuse_local_defaults(settings, **where)
    named = [n for n in ("MAILER_SECRET_KEYS", "MAILER_PUBLIC_URL") if n in str(raised.value)]
    assert named == refused


def test_a_secret_from_mailer_secret_is_accepted() -> None:
    result = CliRunner().invoke(main, ["secret"])
    assert result.exit_code == 0, result.output
    printed = result.output.strip()
    assert len(printed) >= MIN_SECRET_BYTES and printed.isascii() and "," not in printed
    assert printed != CliRunner().invoke(main, ["secret"]).output.strip()
    settings = load_settings(secret_keys=[printed], **PUBLIC)
    assert settings.unsafe_local_defaults() == []


ATTACK = "=?utf-8?q?X=0D=0AReply-To:_a@attacker.example?="


@pytest.mark.parametrize("field", ["sender_name", "publication_name"])
@pytest.mark.parametrize("value", [ATTACK, "The\r\nBcc: all@example.org", "Weekly\x00", "A\u2028B"])
def test_header_settings_refuse_what_would_change_a_header(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=field):
        load_settings(**{field: value})


def test_unsubscribe_mailto_must_be_an_address(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MAILER_UNSUBSCRIBE_MAILTO", "x@example.org>, <https://evil.example/")
    with pytest.raises(ConfigError, match="MAILER_UNSUBSCRIBE_MAILTO"):
        load_settings()
    monkeypatch.setenv("MAILER_UNSUBSCRIBE_MAILTO", "leave@example.org")
    assert load_settings().unsubscribe_mailto == "leave@example.org"


@pytest.mark.parametrize("lang", ["../../../etc/x", "/tmp/evil", "en/../../x", "zh CN", "e"])
def test_a_post_lang_must_be_a_language_tag(write_post, lang: str) -> None:
    path = write_post(f"---\ntitle: T\nlang: '{lang}'\n---\nBody text.\n")
    with pytest.raises(PostError, match="'lang' must be a language tag"):
        load_post(path)


def test_a_lang_never_loads_a_file_outside_the_strings(tmp_path: Path) -> None:
    """Defence in depth: even handed a path, the templates read only strings/<tag>.toml."""
    (tmp_path / "evil.toml").write_text('unsubscribe = "pwned"\n', "utf-8")
    strings_dir = tmp_path / "templates" / "strings"
    strings_dir.mkdir(parents=True)
    templates = Templates(tmp_path / "templates")
    assert templates.strings("../../evil")["unsubscribe"] != "pwned"
    assert templates.strings("zh-CN")["unsubscribe"] == templates.strings("zh")["unsubscribe"]
    with pytest.raises(ConfigError, match="lang"):
        load_settings(lang="../../evil")


@pytest.mark.parametrize("lang", ["en", "zh-CN", "zh-Hant-TW", "sr-Latn", "de-CH-1996"])
def test_real_language_tags_are_accepted(write_post, lang: str) -> None:
    path = write_post(f"---\ntitle: T\nlang: {lang}\n---\nBody text.\n")
    assert load_post(path).lang == lang


@pytest.mark.parametrize("value", ["", " , ", ","])
def test_an_empty_secret_list_fails_at_start(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv("MAILER_SECRET_KEYS", value)
    with pytest.raises(ConfigError, match=r"MAILER_SECRET_KEYS: .*set at least one secret"):
        load_settings()


def test_a_mistyped_variable_is_named_with_the_closest_setting(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("MAILER_BACKNED", "smtp")
    monkeypatch.setenv("MAILER_BATCHSIZE", "10")
    settings = load_settings()
    assert settings.backend == "outbox" and settings.batch_size == 1000
    warnings = [r.getMessage() for r in caplog.records if r.name == "mailer.config"]
    assert warnings == [
        "MAILER_BACKNED is not a setting and is ignored: did you mean MAILER_BACKEND?",
        "MAILER_BATCHSIZE is not a setting and is ignored: did you mean MAILER_BATCH_SIZE?",
    ]


def test_variables_are_checked_whatever_their_case_as_they_are_read(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("Mailer_Batch_Size", "10")  # read: no warning
    monkeypatch.setenv("mailer_bakend", "smtp")  # a typo, in lower case
    assert load_settings().batch_size == 10
    warnings = [r.getMessage() for r in caplog.records if r.name == "mailer.config"]
    assert warnings == [
        "mailer_bakend is not a setting and is ignored: did you mean MAILER_BACKEND?"
    ]


def test_templates_never_see_a_secret(tmp_path: Path, write_post) -> None:
    """An operator's template may print what the email shows, not the keys of the service."""
    email_dir = tmp_path / "templates" / "email"
    email_dir.mkdir(parents=True)
    (email_dir / "newsletter.txt").write_text("{{ settings.secret_keys }}\n", "utf-8")
    secret = secrets.token_urlsafe(32)
    settings = load_settings(templates_dir=tmp_path / "templates", secret_keys=[secret])
    post = load_post(write_post("---\ntitle: T\n---\nBody text.\n"))
    with pytest.raises(TemplateError, match="secret_keys"):
        Renderer(settings).render(post)
