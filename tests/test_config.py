"""Settings: defaults that need no setup, env over file, and wrong values named."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailer.config import Settings, load_settings
from mailer.errors import ConfigError


def test_defaults_need_no_setup() -> None:
    settings = load_settings()
    assert settings.backend == "outbox"
    assert settings.broker_url == ""
    assert settings.database_url.startswith("sqlite:///")
    assert settings.posts_dir == Path("posts")


def test_each_default_passes_its_own_check_as_is() -> None:
    """Defaults are not checked as the settings are read (their checks would import
    SQLAlchemy, `limits`, email-validator): given explicitly, each comes back unchanged."""
    defaults = {name: field.default for name, field in Settings.model_fields.items()}
    assert Settings(**defaults).model_dump() == defaults
    assert Settings.model_config["validate_default"] is False  # what this test stands for


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("MAILER_SUBSCRIBE_RATE_LIMIT", "often", "use a rate such as '5/minute'"),
        ("MAILER_DATABASE_URL", "mysql://db/news", "mysql is not supported"),
        ("MAILER_SEED_LIST", "me@example.org,nobody", "'nobody': "),
        ("MAILER_REPLY_TO", "nobody", "value is not a valid email address: An email address"),
    ],
)
def test_settings_whose_checks_import_late_are_checked_when_set(
    monkeypatch, name: str, value: str, words: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError, match=f"^{name}: (Value error, )?{words}"):
        load_settings()


def test_file_then_environment(monkeypatch, isolated_env: Path) -> None:
    (isolated_env / "mailer.toml").write_text(
        'publication_name = "AI 周报"\nsite_url = "https://blog.example.org/"\n'
        'sender_email = "news@example.org"\n',
        "utf-8",
    )
    monkeypatch.setenv("MAILER_SENDER_EMAIL", "weekly@example.org")
    settings = load_settings()
    assert settings.publication_name == "AI 周报"
    assert settings.site_url == "https://blog.example.org"  # trailing slash dropped
    assert settings.sender_email == "weekly@example.org"


def test_values_given_over_environment_over_file(monkeypatch, isolated_env: Path) -> None:
    (isolated_env / "mailer.toml").write_text('backend = "smtp"\nbatch_size = 10\n')
    monkeypatch.setenv("MAILER_BACKEND", "sendgrid")
    settings = load_settings(backend="outbox")
    assert (settings.backend, settings.batch_size) == ("outbox", 10)


def test_names_are_read_whatever_their_case(monkeypatch, isolated_env: Path) -> None:
    (isolated_env / "mailer.toml").write_text('Backend = "smtp"\n')
    monkeypatch.setenv("mailer_site_url", "https://blog.example.org")
    settings = load_settings()
    assert (settings.backend, settings.site_url) == ("smtp", "https://blog.example.org")


def test_config_file_from_environment(monkeypatch, isolated_env: Path) -> None:
    other = isolated_env / "elsewhere.toml"
    other.write_text('backend = "smtp"\n', "utf-8")
    monkeypatch.setenv("MAILER_CONFIG", str(other))
    assert load_settings().backend == "smtp"
    monkeypatch.setenv("MAILER_CONFIG", str(isolated_env / "missing.toml"))
    with pytest.raises(ConfigError, match=r"MAILER_CONFIG=.*missing\.toml: no such file"):
        load_settings()


@pytest.mark.parametrize(
    ("name", "value", "words"),
    [
        ("MAILER_SITE_URL", "blog.example.org", "MAILER_SITE_URL: Value error, must be an http"),
        (
            "MAILER_SENDER_EMAIL",
            "not-an-address",
            "MAILER_SENDER_EMAIL: value is not a valid email",
        ),
        (
            "MAILER_BACKEND",
            "pigeon",
            "MAILER_BACKEND: Input should be 'outbox', 'sendgrid' or 'smtp'",
        ),
        # The pages' links start with its path: one a link or a header could be misled by.
        *(
            ("MAILER_PUBLIC_URL", url, "MAILER_PUBLIC_URL: Value error, must be an http(s) URL")
            for url in (
                "https://example.org//newsletter",  # //newsletter: another host, in a link
                "https://example.org/news?from=mail",
                "https://example.org/news#top",
                "https://example.org/新闻",  # a header (the stats cookie's) takes no such text
                "https://example.org/news letter",
                'https://example.org/a"b',
            )
        ),
    ],
)
def test_wrong_environment_value_is_named(monkeypatch, name: str, value: str, words: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert words in str(caught.value)
    assert repr(value) in str(caught.value)


@pytest.mark.parametrize(
    ("given", "kept"),
    [
        ("https://example.org/newsletter/", "https://example.org/newsletter"),
        ("https://example.org/a/b-c_d.e~f", "https://example.org/a/b-c_d.e~f"),
        ("https://example.org/%E6%96%B0%E9%97%BB", "https://example.org/%E6%96%B0%E9%97%BB"),
    ],
)
def test_a_public_url_under_a_plain_path_is_taken(given: str, kept: str) -> None:
    assert Settings(public_url=given).public_url == kept


def test_wrong_file_values_and_unknown_keys_are_named(isolated_env: Path) -> None:
    (isolated_env / "mailer.toml").write_text('public_url = "ftp://x"\nsite_ulr = "typo"\n')
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert "public_url in mailer.toml: Value error, must be an http" in message
    assert "site_ulr in mailer.toml: unknown setting" in message


def test_broken_toml_is_named(isolated_env: Path) -> None:
    (isolated_env / "mailer.toml").write_text('site_url = "https://x\n')
    with pytest.raises(ConfigError, match=r"^mailer\.toml: "):
        load_settings()


def test_web_font_needs_its_family(monkeypatch) -> None:
    monkeypatch.setenv("MAILER_FONT_URL", "https://fonts.example/css")
    with pytest.raises(ConfigError, match="set font_family"):
        load_settings()


def test_an_internationalised_sender_domain_goes_out_in_ascii(isolated_env: Path) -> None:
    """From, the Message-ID, List-Id and DKIM take an ASCII domain: the IDNA form is kept,
    so a Unicode domain cannot stop the Friday send at the first message."""
    from mailer.delivery.identity import Identity
    from mailer.delivery.message import Batch, Envelope, Sender, to_bytes

    settings = Settings(sender_email="news@Bücher.example", reply_to="post@bücher.example")
    assert settings.sender_email == "news@xn--bcher-kva.example"
    assert settings.reply_to == "post@xn--bcher-kva.example"
    assert settings.sender_domain == "xn--bcher-kva.example"
    assert Identity.of(settings).list_id.endswith(".xn--bcher-kva.example")
    envelope = Envelope("a@example.org", "", "1-2")
    batch = Batch("S", "<p>x</p>", "x", Sender(settings.sender_email), (envelope,))
    head = to_bytes(batch, envelope).split(b"\r\n\r\n")[0].decode("ascii")
    assert "From: news@xn--bcher-kva.example" in head
    assert "@xn--bcher-kva.example>" in head  # the Message-ID


def test_a_sender_address_that_needs_smtputf8_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("MAILER_SENDER_EMAIL", "pöst@example.org")
    with pytest.raises(ConfigError, match="MAILER_SENDER_EMAIL: value is not a valid email"):
        load_settings()
