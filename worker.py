"""The Celery app: ``celery -A worker worker`` sends, ``celery -A worker beat`` schedules.

Tasks take ids only (no addresses in the broker), are idempotent (the ledger
decides what is left to send), and are acknowledged late, so a task whose worker
dies is delivered again and finds only what is still queued. Each worker process
builds its own Runtime after the fork. Beat's tasks have a queue of their own, which
every worker consumes too, so the sweep never waits behind a campaign's batches.
Beat keeps its state file in MAILER_DATA_DIR, not in whatever folder it was started from.
Run the worker with ``--loglevel=INFO`` to see each task (Celery's default is WARNING).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
from collections import Counter
from pathlib import Path
from zoneinfo import ZoneInfo

from celery import Celery, Task, signals
from celery.beat import PersistentScheduler
from celery.schedules import crontab
from kombu import Queue

from mailer import logs
from mailer.bounces import fetch as bounces
from mailer.clock import utcnow
from mailer.config import Settings, load_settings
from mailer.errors import MailerError
from mailer.metrics import use_dir
from mailer.runtime import Runtime
from mailer.sending import dispatch, schedule, telemetry
from mailer.sending.batch import send_batch
from mailer.store.ledger import handed_over

try:
    settings = load_settings()
except MailerError as exc:  # one line, as from the `mailer` command, not a traceback
    raise SystemExit(f"error: {exc}") from None
# Before the pool forks: each pool process writes its metrics to a file of its own there.
use_dir(settings.metrics_dir)
# The broker the worker consumes and the tasks it publishes (beat's) use: one address.
BROKER_URL = settings.broker_url or "redis://127.0.0.1:6379/0"
# A task that outlives this is delivered again by Redis: keep it well above task_time_limit.
VISIBILITY_TIMEOUT = 3600
TASK_TIME_LIMIT = 600
BATCH_QUEUE, BEAT_QUEUE = dispatch.BATCH_QUEUE, dispatch.BEAT_QUEUE


def _schedule(settings: Settings) -> dict[str, dict[str, object]]:
    bounce_fetch = float(settings.bounce_fetch_seconds)
    hour, minute = settings.send_time.split(":")[:2]
    return {
        "send-scheduled-posts": {
            "task": "mailer.send_scheduled_posts",
            # minute and hour too: day_of_week alone would fire every minute of the day.
            "schedule": crontab(
                minute=int(minute), hour=int(hour), day_of_week=settings.send_weekday
            ),
        },
        "start-due-campaigns": {"task": "mailer.start_due_campaigns", "schedule": 30.0},
        "sweep": {"task": "mailer.sweep", "schedule": float(settings.sweep_seconds)},
    } | (  # the bounce mailbox, where there is one
        {"fetch-bounces": {"task": "mailer.fetch_bounces", "schedule": bounce_fetch}}
        if settings.bounce_imap_host
        else {}
    )


class DataDirScheduler(PersistentScheduler):
    """Celery's own scheduler, but the folder of its state file is made when beat opens it
    (MAILER_DATA_DIR by default, or wherever ``--schedule`` points)."""

    schedule_filename: str  # set by PersistentScheduler.__init__ (its stubs do not say)

    def setup_schedule(self) -> None:
        Path(self.schedule_filename).parent.mkdir(parents=True, exist_ok=True)
        super().setup_schedule()


app = Celery("mailer", broker=BROKER_URL)
_BEAT_TASKS = (
    "mailer.send_scheduled_posts",
    "mailer.start_due_campaigns",
    "mailer.sweep",
    "mailer.fetch_bounces",
)
app.conf.update(
    # A worker started without -Q consumes every queue listed here.
    task_queues=[Queue(BATCH_QUEUE), Queue(BEAT_QUEUE, routing_key=BEAT_QUEUE)],
    task_default_queue=BATCH_QUEUE,
    task_routes={name: {"queue": BEAT_QUEUE} for name in _BEAT_TASKS},
    task_acks_late=True,
    task_reject_on_worker_lost=True,
    worker_prefetch_multiplier=1,
    broker_transport_options={"visibility_timeout": VISIBILITY_TIMEOUT},
    broker_connection_retry_on_startup=True,
    task_time_limit=TASK_TIME_LIMIT,
    task_ignore_result=True,
    task_serializer="json",
    accept_content=["json"],
    timezone=settings.send_timezone,
    beat_schedule=_schedule(settings),
    # Beat's state (last run of each entry), not the current folder's clutter.
    beat_schedule_filename=str(settings.data_dir / "celerybeat-schedule"),
    beat_scheduler=DataDirScheduler,
    # Task events for Flower and `celery events`, as -E would: its task list stays empty
    # without them. Sent events show a task handed over but not yet taken by a worker.
    worker_send_task_events=True,
    task_send_sent_event=True,
    worker_hijack_root_logger=False,
)

_runtime: Runtime | None = None
_queue: dispatch.CeleryQueue | None = None


def runtime() -> Runtime:
    """This process's parts, the only ones its tasks use (built in the process: after the
    fork, not at import)."""
    global _runtime
    if _runtime is None:
        _runtime = Runtime(settings)
    return _runtime


def queue() -> dispatch.CeleryQueue:
    global _queue
    if _queue is None:
        _queue = dispatch.CeleryQueue(BROKER_URL)
    return _queue


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _log_format(logger: logging.Logger, **_: object) -> None:
    """MAILER_LOG_FORMAT on the handlers Celery set up (its --loglevel and --logfile stay)."""
    logs.use_format(logger, settings.log_format)


@signals.worker_init.connect
def _load_before_fork(**_: object) -> None:
    """Load once, before the pool forks, what each pool process's first batch would load for
    itself: the backend's modules and the public suffix list its identity check reads (0.2 s
    of CPU), and the database driver. The pool shares them, and a campaign's first batches
    no longer wait for them. No connection is opened; a setting that is wrong is left for
    the batches to report."""
    warm = Runtime(settings)
    with contextlib.suppress(MailerError):
        _loaded = (warm.backend, warm.engine)
    warm.close()


@signals.worker_process_init.connect
def _fresh_runtime_after_fork(**_: object) -> None:
    """Connections do not survive a fork: each pool process opens its own."""
    global _runtime, _queue
    _runtime, _queue = None, None


@app.task(bind=True, name=dispatch.SEND_BATCH_TASK, max_retries=None)
def send_batch_task(self: Task, campaign_id: int, batch: int) -> dict[str, int]:
    rt = runtime()
    result = send_batch(rt, campaign_id, batch)
    if result.requeued:
        if self.request.retries >= rt.settings.max_retries:
            dispatch.give_up(rt, campaign_id, batch, result.error)
        else:
            s = rt.settings
            delay = dispatch.backoff(
                self.request.retries, result.retry_after, s.retry_base_seconds, s.retry_max_seconds
            )
            # Never longer than the visibility timeout, or Redis hands the task out twice.
            delay = min(delay, VISIBILITY_TIMEOUT / 2)
            with rt.sessions.begin() as session:  # held till then: the sweep leaves it be
                handed_over(session, campaign_id, [batch], utcnow() + dt.timedelta(seconds=delay))
            attempt = self.request.retries + 1
            telemetry.retrying(campaign_id, batch, attempt, delay, result.error)
            raise self.retry(countdown=delay)
    return {"sent": result.sent, "failed": result.failed, "unknown": result.unknown}


@app.task(name="mailer.start_due_campaigns")
def start_due_campaigns() -> list[int]:
    return dispatch.start_due(runtime(), queue())


@app.task(name="mailer.sweep")
def sweep() -> None:
    rt = runtime()
    dispatch.sweep(
        rt,
        queue(),
        lost_after=dt.timedelta(seconds=rt.settings.lost_batch_seconds),
        unknown_window=dt.timedelta(seconds=rt.settings.unknown_window_seconds),
    )


@app.task(name="mailer.fetch_bounces")
def fetch_bounces() -> dict[str, int]:
    return dict(Counter(bounces.fetch_bounces(runtime())))


@app.task(name="mailer.send_scheduled_posts")
def send_scheduled_posts() -> list[str]:
    rt = runtime()
    today = dt.datetime.now(ZoneInfo(rt.settings.send_timezone)).date()
    return schedule.send_scheduled_posts(rt, queue(), today)
