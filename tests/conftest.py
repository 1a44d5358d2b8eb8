"""Shared fixtures: settings isolated from the developer's environment, and the sample post."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from playwright.sync_api import Browser, sync_playwright
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.orm import sessionmaker

import subscribers.models  # noqa: F401  (the tables, for TRUNCATE)
from mailer.config import Settings, load_settings
from mailer.content.render import Renderer
from mailer.runtime import Runtime
from mailer.store.db import Base, make_engine, make_sessions, upgrade
from testkit.redis_db import redis_url

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_POST = ROOT / "posts" / "2026-02-06-ai-weekly.md"  # the reference post, in the repo
ARTIFACTS = ROOT / "tests" / "artifacts"  # screenshots, for a human look (gitignored)
CHROMIUM = Path("/usr/bin/chromium")  # Debian's; `make test-programs` installs it
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(autouse=True)
def isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No MAILER_* variable or mailer.toml of the developer's leaks into a test."""
    for name in list(os.environ):
        if name.startswith("MAILER_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture
def settings() -> Settings:
    return load_settings(
        site_url="https://blog.example.org",
        public_url="https://mail.example.org",
        secret_keys=["a-test-secret-nobody-else-knows-32-bytes-or-more"],
    )


@pytest.fixture
def renderer(settings: Settings) -> Renderer:
    return Renderer(settings)


@pytest.fixture
def write_post(tmp_path: Path):
    """Write a post file into the test's folder and return its path."""

    def write(text: str | bytes, name: str = "post.md") -> Path:
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text, "utf-8")
        return path

    return write


# The real PostgreSQL server of this machine (CI starts it where it is not running).
POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
DATABASES = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A database of its own for this test run, migrated once, dropped at the end."""
    name = f"mailer_test_{os.getpid()}_{secrets.token_hex(3)}"
    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(POSTGRES_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    engine = make_engine(url)
    upgrade(engine)
    engine.dispose()
    yield url
    with admin.connect() as connection:
        connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture(params=DATABASES)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each store test runs on SQLite (a fresh file) and on PostgreSQL (emptied tables)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'mailer.db'}"
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url
        return
    url = request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    tables = ", ".join(t.name for t in Base.metadata.sorted_tables)
    with engine.begin() as connection:
        connection.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    engine.dispose()
    yield url


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker:
    return make_sessions(engine)


@pytest.fixture
def runtime() -> Iterator[Callable[..., Runtime]]:
    """Makes Runtimes (of ``settings`` with any ``changes``), each closed after the test even
    when it fails: its database connections and the backend's kept connections."""
    made: list[Runtime] = []

    def make(settings: Settings, **changes: object) -> Runtime:
        made.append(Runtime(settings.model_copy(update=changes) if changes else settings))
        return made[-1]

    yield make
    for rt in made:
        rt.close()


@pytest.fixture
def broker() -> Iterator[redis.Redis]:
    """This run's Redis database, emptied before and after (no task outlives the test)."""
    with redis.Redis.from_url(redis_url()) as client:
        client.flushdb()
        yield client
        client.flushdb()


@pytest.fixture(scope="module")
def browser() -> Iterator[Callable[[], Browser]]:
    """Chromium, launched once per module, on first use inside a test.

    Launching from the test body makes a missing browser a test failure (not a setup error
    or a skip): the browser checks are part of `make test`.
    """
    with sync_playwright() as playwright:
        launched: list[Browser] = []

        def get() -> Browser:
            if not launched:
                if not CHROMIUM.is_file():
                    pytest.fail(f"{CHROMIUM} is missing: run `make test-programs` to install it")
                launched.append(
                    playwright.chromium.launch(
                        executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
                    )
                )
            return launched[0]

        yield get
        for launched_browser in launched:
            launched_browser.close()
