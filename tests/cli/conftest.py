"""`mailer …` run in this process with click's CliRunner, on the test's own database.

In-process, so coverage sees the commands and a test reads the store the command wrote;
tests/test_cli.py and tests/test_send_cli.py keep the real-process smoke tests.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from mailer.cli import main

Cli = Callable[..., Result]


@pytest.fixture
def cli(database_url: str) -> Cli:
    """``cli(*args, input=None, **env)``: ``mailer ARGS…`` with MAILER_* settings from
    ``env`` (``broker_url="redis://…"`` sets MAILER_BROKER_URL) on the test's database."""

    def run(*args: str, input: str | None = None, **env: str) -> Result:
        environ = {"MAILER_DATABASE_URL": database_url, "COLUMNS": "300"}
        environ |= {f"MAILER_{name.upper()}": value for name, value in env.items()}
        return CliRunner().invoke(main, list(args), input=input, env=environ)

    return run


def ok(result: Result) -> str:
    """The command's stdout, once it is known to have ended well."""
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stdout


def refused(result: Result, message: str) -> None:
    """The command ended with the one-line error the CLI promises, and exit status 2."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert result.stderr.startswith("error: ") and message in result.stderr, result.stderr
    assert result.stderr.count("\n") == 1


def cells(table: str) -> list[list[str]]:
    """The rows of a table rich printed, each as its words, without the box drawing."""
    rows = []
    for line in table.splitlines():
        words = "".join(" " if "\u2500" <= ch <= "\u257f" else ch for ch in line).split()
        if words:
            rows.append(words)
    return rows
