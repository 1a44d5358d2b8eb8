"""``mailer --help`` lists the commands without importing them; a command imports its own."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
from pathlib import Path

from click.testing import CliRunner

from mailer.cli import COMMANDS, main
from tests.conftest import SAMPLE_POST

# What listing the commands must not load: each costs a tenth of a second or more.
HEAVY = ("alembic", "celery", "fastapi", "psycopg", "py3langid", "pydantic", "sqlalchemy")
# What previewing a post that gives its language away, with no settings and no store yet,
# needs none of: no database to read the last issue from, no rate limit, no address to
# check, no server or browser asked for (and the settings are read without
# pydantic-settings).
NOT_FOR_PREVIEW = (
    "alembic",
    "email_validator",
    "imagesize",
    "limits",
    "psycopg",
    "py3langid",
    "pydantic_settings",
    "sqlalchemy",
    "watchfiles",
    "webbrowser",
)
LOADED = (
    "import json, sys\n"
    "from mailer.cli import main\n"
    "try:\n"
    "    main(sys.argv[1:])\n"
    "except SystemExit:\n"
    "    pass\n"
    "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})), file=sys.stderr)\n"
)


def test_help_lists_every_command_and_imports_none() -> None:
    answer = subprocess.run(
        [sys.executable, "-c", LOADED, "--help"], capture_output=True, text=True, check=True
    )
    listed = answer.stdout.split("Commands:")[1].split()
    assert set(COMMANDS) <= set(listed)
    loaded = json.loads(answer.stderr)
    assert [name for name in HEAVY if name in loaded] == []


def test_preview_without_settings_or_store_loads_only_what_it_uses(tmp_path: Path) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("MAILER_")}
    answer = subprocess.run(
        [sys.executable, "-c", LOADED, "preview", str(SAMPLE_POST), "--out", "out"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert (tmp_path / "out" / f"{SAMPLE_POST.stem}.html").is_file()
    loaded = json.loads(answer.stderr.splitlines()[-1])
    assert [name for name in NOT_FOR_PREVIEW if name in loaded] == []


def test_the_listing_says_what_each_command_says_of_itself() -> None:
    for name, (where, first_sentence) in COMMANDS.items():
        module, _, attribute = where.partition(":")
        command = getattr(importlib.import_module(module), attribute)
        assert (command.name, command.get_short_help_str(1000)) == (name, first_sentence)


def test_a_command_runs_once_asked_for() -> None:
    result = CliRunner().invoke(main, ["secret", "--help"])
    assert result.exit_code == 0 and "MAILER_SECRET_KEYS" in result.output


def test_shared_metrics_cost_a_command_none_of_the_heavy_modules(tmp_path: Path) -> None:
    """With MAILER_METRICS_DIR set every command opens its counters at start; the collectors
    that read the broker and the store import their drivers only when Prometheus asks."""
    env = {name: value for name, value in os.environ.items() if not name.startswith("MAILER_")}
    env["MAILER_METRICS_DIR"] = str(tmp_path / "metrics")
    answer = subprocess.run(
        [sys.executable, "-c", LOADED, "secret"], env=env, capture_output=True, text=True
    )
    assert answer.stdout.strip()  # the secret it printed
    loaded = json.loads(answer.stderr.splitlines()[-1])
    assert [name for name in ("kombu", "redis", "sqlalchemy") if name in loaded] == []
