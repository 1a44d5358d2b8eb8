"""The environment of a child process (a Celery worker, a web server) that must run with
exactly the settings a test or a benchmark built: shared by both, so they cannot drift."""

from __future__ import annotations

import os
from pathlib import Path

from mailer.config import ENV_PREFIX, Settings

ROOT = Path(__file__).resolve().parents[1]


def child_env(settings: Settings) -> dict[str, str]:
    """This process's environment without its own ``MAILER_*`` variables, plus the settings
    given explicitly (lists comma-separated, as ``Settings`` reads them back), with the
    project importable as it is here."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(ENV_PREFIX)}
    for name, value in settings.model_dump(exclude_unset=True).items():
        env[ENV_PREFIX + name.upper()] = ",".join(value) if isinstance(value, list) else str(value)
    env["PYTHONPATH"] = str(ROOT)
    return env
