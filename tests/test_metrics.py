"""/metrics over real HTTP from the live app, parsed as Prometheus parses it.

Counters after a real send, open, click and webhook event; the broker's queue depth and
the campaigns by state, read at scrape time; a real Celery worker's counters reaching the
web app through MAILER_METRICS_DIR; and the stats token in front of a public app's
/metrics. Counters of this test process add up across tests: those are compared before
and after.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from mailer.config import Settings
from mailer.runtime import Runtime
from mailer.sending.dispatch import CeleryQueue, InlineQueue, progress, start
from testkit.processes import child_env
from testkit.redis_db import redis_url
from tests.event_support import WebhookKey, new_campaign, post_events, seed, sg_event, write_post
from tests.live_server import LiveServer, server_factory

start_server = server_factory()
BROKER = redis_url()
TOKEN = "a-stats-token-for-the-metrics-tests-0123456789"
READERS = ["ada@example.org", "grace@example.org"]
sqlite_only = pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(server: LiveServer, **headers: str) -> Samples:
    response = httpx.get(f"{server.url}/metrics", headers=headers, timeout=15)
    assert response.status_code == 200, response.text
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def test_a_send_an_open_a_click_and_a_webhook_event_are_counted(
    start_server: Callable[..., LiveServer], runtime: Callable[[Settings], Runtime], tmp_path: Path
) -> None:
    key = WebhookKey()
    server = start_server(sendgrid_webhook_key=key.public_b64)
    rt = runtime(server.settings)
    seed(rt.sessions, READERS)
    campaign_id = new_campaign(rt, write_post(tmp_path, "counted", "Counted", ["https://x.org/"]))
    before = scrape(server)
    assert start(rt, campaign_id, InlineQueue(rt))
    html = server.mail()[0].get_body(preferencelist=("html",)).get_content()
    pixel = re.search(re.escape(server.url) + r"/o/[^\"]+\.gif", html)
    click = re.search(re.escape(server.url) + r"/c/[^\"]+/0", html)
    assert pixel and click
    assert httpx.get(pixel[0]).status_code == 200
    assert httpx.get(click[0]).status_code == 302
    processed = sg_event("processed", READERS[0], f"{campaign_id}-1")
    assert post_events(server.url, [processed], key).status_code == 200
    after = scrape(server)

    def grew(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("mailer_messages_total", backend="outbox", outcome="sent") == 2
    assert grew("mailer_batch_seconds_count", backend="outbox") == 1
    assert grew("mailer_events_total", source="tracking", kind="opened") == 1
    assert grew("mailer_events_total", source="tracking", kind="clicked") == 1
    assert grew("mailer_events_total", source="sendgrid", kind="processed") == 1
    assert value(after, "mailer_campaigns", state="sent") == 1
    assert value(before, "mailer_campaigns", state="draft") == 1


@sqlite_only
def test_queue_depth_is_read_from_the_broker(
    start_server: Callable[..., LiveServer], broker: redis.Redis
) -> None:
    server = start_server(broker_url=BROKER)
    queue = CeleryQueue(BROKER)
    try:
        queue.enqueue(1, [0, 1, 2])  # no worker runs: they wait
    finally:
        queue.close()
    samples = scrape(server)
    assert value(samples, "mailer_queue_depth", queue="celery") == 3
    assert value(samples, "mailer_queue_depth", queue="beat") == 0


@sqlite_only
def test_a_public_apps_metrics_need_the_stats_token(
    start_server: Callable[..., LiveServer],
) -> None:
    server = start_server(public_url="https://mail.example.org", stats_token=TOKEN)
    url = f"{server.url}/metrics"
    refused = httpx.get(url)
    assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Bearer")
    assert httpx.get(url, headers={"Authorization": "Bearer wrong"}).status_code == 401
    signed_in = scrape(server, Authorization=f"Bearer {TOKEN}")
    assert ("mailer_campaigns", frozenset({("state", "draft")})) in signed_in
    no_token = start_server(public_url="https://mail.example.org", stats_token="")
    assert httpx.get(f"{no_token.url}/metrics").status_code == 404


@sqlite_only
def test_a_public_apps_metrics_answer_in_text_while_the_limits_redis_is_away(
    start_server: Callable[..., LiveServer],
) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:  # a port nothing answers on
        away = f"redis://127.0.0.1:{taken.getsockname()[1]}/0"
    server = start_server(public_url="https://mail.example.org", stats_token=TOKEN, broker_url=away)
    refused = httpx.get(f"{server.url}/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    assert refused.status_code == 503
    assert refused.headers["content-type"].startswith("text/plain")
    assert refused.text == "the failed-attempts limit is unavailable: try again later\n"
    assert int(refused.headers["retry-after"]) > 0


@sqlite_only
def test_a_celery_workers_counts_reach_the_web_app_and_its_logs_are_json(
    start_server: Callable[..., LiveServer],
    runtime: Callable[[Settings], Runtime],
    database_url: str,
    broker: redis.Redis,
    tmp_path: Path,
) -> None:
    folder = tmp_path / "metrics"
    settings = Settings(
        database_url=database_url,
        broker_url=BROKER,
        outbox_dir=tmp_path / "outbox",
        metrics_dir=folder,
        log_format="json",
    )
    rt = runtime(settings)
    seed(rt.sessions, READERS)
    campaign_id = new_campaign(rt, write_post(tmp_path, "worked", "Worked", ["https://x.org/"]))
    command = [sys.executable, "-m", "celery", "-A", "worker", "worker", "--concurrency=1",
               "--without-mingle", "--without-gossip", "--loglevel=INFO"]  # fmt: skip
    log = tmp_path / "worker.log"
    with log.open("w") as stderr:
        worker = subprocess.Popen(
            command, cwd=tmp_path, env=child_env(settings), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=stderr,
        )  # fmt: skip
    try:
        queue = CeleryQueue(BROKER)
        try:
            assert start(rt, campaign_id, queue)
        finally:
            queue.close()
        deadline = time.monotonic() + 60
        while progress(rt, campaign_id).status != "sent":
            assert time.monotonic() < deadline and worker.poll() is None, log.read_text()
            time.sleep(0.2)
    finally:
        os.killpg(worker.pid, signal.SIGTERM)
        worker.wait(timeout=30)
    lines = log.read_text().splitlines()
    if os.geteuid() == 0:  # Celery's warning to root, printed before its logging starts
        warned = [i for i, line in enumerate(lines) if "_warn_or_raise_security_error" in line]
        lines = lines[warned[0] + 1 :] if warned else lines
    records = [json.loads(line) for line in lines]
    (batch,) = [r for r in records if r["message"] == "batch done"]
    assert (batch["campaign"], batch["sent"], batch["provider_status"]) == (campaign_id, 2, "ok")

    server = start_server(metrics_dir=folder)
    samples = scrape(server)
    assert value(samples, "mailer_messages_total", backend="outbox", outcome="sent") == 2
    assert value(samples, "mailer_batch_seconds_count", backend="outbox") == 1
