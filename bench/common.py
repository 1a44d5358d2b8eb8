"""What the benchmarks share: the PostgreSQL server they make fresh databases on, and how
they stop the child processes they start, so every benchmark cleans up the same way."""

from __future__ import annotations

import os
import signal
import subprocess
from typing import Any

POSTGRES_ADMIN_URL = os.environ.get(
    "MAILER_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)


def create_database(admin_url: str, name: str) -> str:
    """A fresh database ``name`` on ``admin_url``'s server; returns its URL."""
    from sqlalchemy.engine import make_url

    _as_admin(admin_url, f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, name: str) -> None:
    """Drop ``name`` if it exists, whoever is still connected to it."""
    _as_admin(admin_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _as_admin(admin_url: str, statement: str) -> None:
    """Run ``statement`` outside a transaction, as CREATE and DROP DATABASE must be."""
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(statement))
    finally:
        admin.dispose()


def stop_group(process: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM to the process group the child leads, then SIGKILL after ``grace`` seconds."""
    if process.poll() is not None:
        return
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    except ProcessLookupError:
        process.wait()


def terminate(signum: int, _frame: Any) -> None:
    """A SIGTERM handler: exit, unwinding through the caller's clean-up."""
    raise SystemExit(128 + signum)
