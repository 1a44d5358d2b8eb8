"""Log records as log shippers read them: real processes with MAILER_LOG_FORMAT=json, each
line of their stderr parsed as JSON; and text-format lines that outside text cannot forge.
"""

from __future__ import annotations

import email
import json
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from mailer import logs
from mailer.config import Settings, load_settings
from mailer.errors import ConfigError
from mailer.store.db import make_engine, upgrade
from testkit.processes import child_env
from tests.test_smtp import free_port


def _json_lines(stderr: str) -> list[dict[str, Any]]:
    """Every line as one JSON object (a line that is not fails the test)."""
    return [json.loads(line) for line in stderr.splitlines()]


def test_an_inline_send_logs_each_batch_as_one_json_object_per_line(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mailer", "demo"],
        cwd=tmp_path,
        env=child_env(Settings(log_format="json")),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    records = _json_lines(done.stderr)
    (batch,) = [r for r in records if r["message"] == "batch done"]
    assert batch["logger"] == "mailer.sending.telemetry" and batch["level"] == "INFO"
    assert (batch["campaign"], batch["batch"], batch["backend"]) == (1, 0, "outbox")
    assert (batch["count"], batch["sent"], batch["provider_status"]) == (3, 3, "ok")
    assert isinstance(batch["seconds"], float) and "time" in batch
    mail = [email.message_from_bytes(p.read_bytes()) for p in (tmp_path / "outbox").glob("*.eml")]
    readers = [message["To"] for message in mail]
    assert len(readers) == 3 and not any(reader in done.stderr for reader in readers)


def test_mailer_serve_logs_uvicorns_records_as_json_without_readers_tokens(
    tmp_path: Path,
) -> None:
    database_url = f"sqlite:///{tmp_path / 'mailer.db'}"
    engine = make_engine(database_url)
    upgrade(engine)
    engine.dispose()
    port = free_port()
    settings = Settings(log_format="json", database_url=database_url)
    server = subprocess.Popen(
        [sys.executable, "-m", "mailer", "serve", "--port", str(port)],
        cwd=tmp_path,
        env=child_env(settings),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    token = "a-readers-unsubscribe-token"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"http://127.0.0.1:{port}/healthz")
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, "serve did not start"
                time.sleep(0.1)
        status = httpx.get(f"http://127.0.0.1:{port}/unsubscribe/{token}").status_code
    finally:
        server.send_signal(signal.SIGINT)
        _, stderr = server.communicate(timeout=30)
    records = _json_lines(stderr)
    loggers = {r["logger"] for r in records}
    assert {"uvicorn.error", "uvicorn.access"} <= loggers
    assert any(f'"GET /unsubscribe/… HTTP/1.1" {status}' in r["message"] for r in records)
    assert token not in stderr


def test_text_lines_cannot_be_forged_by_outside_text() -> None:
    forged = "\r\n2026-02-06 09:00:00,000 ERROR mailer: forged"
    record = logging.LogRecord("mailer.x", logging.WARNING, __file__, 1, "retry%s", (forged,), None)
    record.reason = "SendGrid answered 500: " + forged + "\x1b[2J\u2028"
    try:
        raise ValueError(forged)
    except ValueError:
        record.exc_info = sys.exc_info()
    lines = logs.TextFormatter().format(record).split("\n")
    assert "forged" in lines[0] and "\r" not in "".join(lines) and "\x1b" not in lines[0]
    assert "\u2028" not in lines[0]
    assert all(line.startswith("    ") for line in lines[1:])  # the traceback, indented


def test_a_log_format_other_than_text_or_json_is_refused_by_name(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MAILER_LOG_FORMAT", "xml")
    with pytest.raises(ConfigError, match="MAILER_LOG_FORMAT: Input should be 'text' or 'json'"):
        load_settings()
