"""Beat reads the bounce mailbox every few minutes, on its own queue, once there is one."""

from __future__ import annotations

import importlib
import sys

from mailer.config import Settings


def test_beat_reads_the_bounce_mailbox_only_when_one_is_configured(settings: Settings) -> None:
    worker = sys.modules.get("worker") or importlib.import_module("worker")
    assert "fetch-bounces" not in worker._schedule(settings)
    mailbox = {
        "bounce_imap_host": "imap.example.org",
        "bounce_imap_username": "bounces",
        "bounce_imap_password": "secret",
        "bounce_fetch_seconds": 120,
    }
    entry = worker._schedule(settings.model_copy(update=mailbox))["fetch-bounces"]
    assert entry == {"task": "mailer.fetch_bounces", "schedule": 120.0}
    assert entry["task"] in worker.app.tasks
    assert worker.app.conf.task_routes[entry["task"]] == {"queue": worker.BEAT_QUEUE}
