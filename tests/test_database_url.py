"""MAILER_DATABASE_URL as hosts hand it out (``postgres://``), and a database we do not run on."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.engine import make_url

from mailer.config import load_settings
from mailer.errors import ConfigError
from mailer.runtime import Runtime


@pytest.mark.parametrize("scheme", ["postgres", "postgresql"])
def test_a_hosts_postgres_url_reaches_postgresql(
    postgres_url: str, scheme: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    given = make_url(postgres_url).set(drivername=scheme).render_as_string(hide_password=False)
    monkeypatch.setenv("MAILER_DATABASE_URL", given)
    runtime = Runtime(load_settings())
    with runtime.sessions() as session:
        assert session.scalar(text("SELECT version()")).startswith("PostgreSQL")
    runtime.close()


def test_an_unsupported_database_is_one_line_naming_the_supported_ones(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILER_DATABASE_URL", "mysql://app:hunter2@db.example.org/news")
    with pytest.raises(ConfigError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("MAILER_DATABASE_URL: ") and "\n" not in message
    assert "mysql is not supported: use sqlite or postgresql" in message
    assert "hunter2" not in message  # a URL's password is not echoed into a log
