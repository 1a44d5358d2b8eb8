"""The sample post through real Celery worker processes on Redis into the SendGrid stand-in.

Every confirmed subscriber gets the edition exactly once, nobody else gets it, and
that stays true when the provider answers 429 and 500 at random and when a worker
is killed with SIGKILL in the middle of a campaign.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from mailer.config import Settings
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.runtime import Runtime
from mailer.sending.dispatch import CeleryQueue, create_campaign, progress, start
from subscribers import store
from subscribers.models import Status
from testkit.processes import child_env
from testkit.redis_db import redis_url
from testkit.sendgrid_standin import API_KEY, SendGridStandIn, copy_headers
from tests.conftest import SAMPLE_POST

BROKER = redis_url()
SECRET = "test-secret-for-worker-tests-long-enough"


def _settings(database_url: str, standin: SendGridStandIn, **extra: object) -> Settings:
    return Settings(
        database_url=database_url,
        broker_url=BROKER,
        backend="sendgrid",
        sendgrid_host=standin.url,
        sendgrid_api_key=API_KEY,
        public_url="https://mail.example.org",
        site_url="https://blog.example.org",
        secret_keys=[SECRET],
        batch_size=50,
        retry_base_seconds=0.05,
        retry_max_seconds=1.0,
        **extra,
    )


@contextmanager
def worker(settings: Settings, cwd: Path, *, beat: bool = False) -> Iterator[subprocess.Popen]:
    """A real `celery -A worker worker` (two pool processes), optionally with its beat."""
    command = [sys.executable, "-m", "celery", "-A", "worker", "worker", "--concurrency=2",
               "--without-mingle", "--without-gossip", "--loglevel=WARNING"]  # fmt: skip
    if beat:
        command += ["--beat", "--schedule", str(cwd / "beat-schedule")]
    with (cwd / "worker.log").open("ab") as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=child_env(settings), start_new_session=True,
            stdout=subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        yield process
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def _seed(rt: Runtime, confirmed: int, pending: int, unsubscribed: int) -> set[str]:
    """Subscribers in each state; returns the confirmed addresses (the audience)."""
    consent = store.Consent(source="test", text="test")
    audience = set()
    with rt.sessions.begin() as session:
        for i in range(confirmed + pending + unsubscribed):
            email = f"reader{i}@example.org"
            status = Status.CONFIRMED if i < confirmed + unsubscribed else Status.PENDING
            subscriber = store.add(session, email, consent, status=status).subscriber
            assert subscriber is not None
            if confirmed <= i < confirmed + unsubscribed:
                store.unsubscribe(session, subscriber, how="test")
            elif i < confirmed:
                audience.add(email)
    return audience


def _start_sample(rt: Runtime) -> int:
    edition = Renderer(rt.settings).render(load_post(SAMPLE_POST))
    campaign, new = create_campaign(rt, edition, SAMPLE_POST)
    assert new
    queue = CeleryQueue(rt.settings.broker_url)
    try:
        assert start(rt, campaign.id, queue)
    finally:
        queue.close()
    return campaign.id


def _wait_sent(rt: Runtime, campaign_id: int, seconds: float = 120) -> None:
    """Until the campaign has ended: sent, or unsettled (some readers' outcome unknown)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        state = progress(rt, campaign_id)
        if state.status in ("sent", "unsettled"):
            return
        assert state.status == "sending", state
        time.sleep(0.25)
    raise AssertionError(f"campaign not finished in {seconds}s: {progress(rt, campaign_id)}")


@pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)
def test_every_confirmed_subscriber_exactly_once(database_url, broker, runtime, tmp_path) -> None:
    with SendGridStandIn() as standin:
        rt = runtime(_settings(database_url, standin))
        audience = _seed(rt, confirmed=1800, pending=100, unsubscribed=100)
        with worker(rt.settings, tmp_path):
            campaign_id = _start_sample(rt)
            _wait_sent(rt, campaign_id)
    assert standin.invalid == []
    assert set(standin.recipients) == audience
    assert max(standin.recipients.values()) == 1
    state = progress(rt, campaign_id)
    assert (state.sent, state.failed, state.unknown, state.queued) == (1800, 0, 0, 0)
    # What readers got is the frozen edition, with their own links filled in.
    personalization = standin.requests[0]["personalizations"][0]
    headers = copy_headers(standin.requests[0])[0]
    assert headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert personalization["substitutions"]["%%unsubscribe_url%%"].startswith(
        "https://mail.example.org/unsubscribe/"
    )
    assert "@" not in str(personalization["custom_args"])
    assert standin.requests[0]["categories"] == ["2026-02-06-ai-weekly"]


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_rate_limits_and_server_errors_are_retried_without_duplicates(
    database_url, broker, runtime, tmp_path
) -> None:
    with SendGridStandIn(rate_limited=0.25, server_errors=0.25, seed=7) as standin:
        rt = runtime(_settings(database_url, standin, max_retries=30))
        audience = _seed(rt, confirmed=2000, pending=0, unsubscribed=0)
        with worker(rt.settings, tmp_path):
            campaign_id = _start_sample(rt)
            _wait_sent(rt, campaign_id, seconds=240)
    assert standin.answers[429] > 0 and standin.answers[500] > 0
    assert set(standin.recipients) == audience
    assert max(standin.recipients.values()) == 1
    assert progress(rt, campaign_id).sent == 2000


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_a_worker_killed_mid_campaign_loses_and_repeats_nothing(
    database_url, broker, runtime, tmp_path
) -> None:
    with SendGridStandIn(delay=0.3) as standin:
        settings = _settings(
            database_url, standin, stale_claim_seconds=3, sweep_seconds=2, lost_batch_seconds=3
        )
        rt = runtime(settings)
        audience = _seed(rt, confirmed=2000, pending=0, unsubscribed=0)
        with worker(settings, tmp_path) as first:
            campaign_id = _start_sample(rt)
            while standin.accepted() < 300:
                time.sleep(0.05)
            os.killpg(first.pid, signal.SIGKILL)  # the worker and its pool, mid-request
            first.wait()
        halfway = progress(rt, campaign_id)
        assert halfway.status == "sending" and halfway.queued > 0
        with worker(settings, tmp_path, beat=True):
            _wait_sent(rt, campaign_id, seconds=180)
    state = progress(rt, campaign_id)
    assert max(standin.recipients.values()) == 1  # nobody twice
    assert state.status == ("unsettled" if state.unknown else "sent")
    assert state.sent + state.unknown == 2000  # nobody lost
    assert state.queued == state.sending == state.failed == 0
    # Unknown rows are shown, not resent: each was received at most once (the kill may
    # have struck before or after the stand-in accepted the request).
    assert set(standin.recipients) <= audience
    assert len(audience - set(standin.recipients)) <= state.unknown


@pytest.mark.parametrize("database_url", ["postgresql"], indirect=True)
def test_send_follow_watches_a_real_send_to_the_end(
    database_url, broker, runtime, tmp_path
) -> None:
    """`mailer send POST --follow` as the operator runs it on Friday: the campaign goes to
    the workers, and the command watches until they are done, then says what was sent."""
    with SendGridStandIn(delay=0.2) as standin:
        rt = runtime(_settings(database_url, standin))
        audience = _seed(rt, confirmed=400, pending=10, unsubscribed=10)
        with worker(rt.settings, tmp_path):
            result = subprocess.run(
                [sys.executable, "-m", "mailer", "send", str(SAMPLE_POST), "--follow"],
                cwd=tmp_path, env={**child_env(rt.settings), "COLUMNS": "200"},
                capture_output=True, text=True, timeout=180,
            )  # fmt: skip
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    # It returned only once every batch was done, and reports them.
    state = progress(rt, 1)
    assert (state.status, state.sent, state.queued, state.sending) == ("sent", 400, 0, 0)
    assert "Campaign 1 (sent): 400 recipients — sent 400, failed 0, unknown 0" in result.stdout
    assert set(standin.recipients) == audience
    assert max(standin.recipients.values()) == 1
