"""The service's Prometheus metrics, every one defined here, and the registry /metrics reads.

Counters and the batch histogram change where things happen: a batch in a worker or in
``mailer send``, an open or a webhook in the web app. Those are separate processes, so
with ``MAILER_METRICS_DIR`` (prometheus-client's multiprocess mode) each one writes its
values to files of its own in that folder and ``registry`` adds them up; ``use_dir``
must run before a process counts anything (the CLI and worker.py call it at start, and
forked pool processes inherit it). Queue depth and campaigns by state are not counted
but read when Prometheus asks: from the broker, and from the store in one GROUP BY.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, values
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

# The collectors' Redis client and store are imported when Prometheus first asks: every
# CLI command calls ``use_dir`` at start, and most read neither.
if TYPE_CHECKING:
    from sqlalchemy.orm import sessionmaker

__all__ = [
    "BATCH_SECONDS",
    "EVENTS",
    "MESSAGES",
    "PROVIDER_ERRORS",
    "CampaignStates",
    "QueueDepth",
    "registry",
    "use_dir",
]

log = logging.getLogger(__name__)
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# A scrape must answer in a few seconds even while the broker does not.
BROKER_TIMEOUT = 1.0

# Labelled metrics only: a labelled metric makes its values (in memory, or in the folder's
# files) on first use, so one defined at import still follows a later ``use_dir``.
MESSAGES = Counter(
    "mailer_messages",
    "Readers of a batch by backend and outcome: sent, failed, unknown (no answer), "
    "deferred (back in the queue for a later try), skipped (left the list)",
    ["backend", "outcome"],
)
BATCH_SECONDS = Histogram(
    "mailer_batch_seconds",
    "Seconds a batch took, from its claim to its recorded outcomes (a MAILER_SEND_RATE wait "
    "included)",
    ["backend"],
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
PROVIDER_ERRORS = Counter(
    "mailer_provider_errors",
    "Batch requests the provider did not take, by kind: transient (429, 5xx, no connection: "
    "retried), permanent (400, 413), uncertain (no answer), refused (credentials)",
    ["backend", "status"],
)
EVENTS = Counter(
    "mailer_events",
    "Events received, by source (tracking: the open pixel and click redirects; sendgrid: "
    "its signed webhook) and kind",
    ["source", "kind"],
)


def use_dir(path: Path | None) -> None:
    """Write this process's metrics, and its children's, to files in ``path`` (made if
    missing); None leaves them in memory. Empty the folder when every process that writes
    there has stopped, not while one runs."""
    if path is None:
        return
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path.resolve())
    if not getattr(values.ValueClass, "_multiprocess", False):
        values.ValueClass = values.MultiProcessValue()


class _ThisProcess:
    """The default registry's metrics (this process's own), inside another registry."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


class QueueDepth:
    """Tasks waiting in the broker, per queue: Redis lists, one per queue, as Celery's Redis
    transport keeps them (our tasks carry no priority, which would add lists)."""

    def __init__(self, broker_url: str, queues: tuple[str, ...]) -> None:
        self.broker_url = broker_url
        self.queues = queues

    def collect(self) -> Iterator[Metric]:
        import redis
        from kombu.utils.url import maybe_sanitize_url

        gauge = GaugeMetricFamily(
            "mailer_queue_depth", "Tasks waiting in the broker, by queue", labels=["queue"]
        )
        try:
            with redis.Redis.from_url(
                self.broker_url,
                socket_timeout=BROKER_TIMEOUT,
                socket_connect_timeout=BROKER_TIMEOUT,
            ) as client:
                pipe = client.pipeline(transaction=False)
                for queue in self.queues:
                    pipe.llen(queue)
                depths = pipe.execute()
        except redis.RedisError as exc:  # the scrape goes on without it; /healthz says more
            log.warning(
                "queue depth unknown: broker %s: %s", maybe_sanitize_url(self.broker_url), exc
            )
            return
        for queue, depth in zip(self.queues, depths, strict=True):
            gauge.add_metric([queue], depth)
        yield gauge


class CampaignStates:
    """Campaigns in each state, every state listed (0 when none is in it)."""

    def __init__(self, sessions: sessionmaker) -> None:
        self.sessions = sessions

    def collect(self) -> Iterator[Metric]:
        from sqlalchemy import func, select

        from mailer.store.ledger import Campaign, CampaignState

        by_state = select(Campaign.status, func.count()).group_by(Campaign.status)
        with self.sessions() as session:
            counts: dict[str, int] = {state: count for state, count in session.execute(by_state)}
        gauge = GaugeMetricFamily("mailer_campaigns", "Campaigns by state", labels=["state"])
        for state in CampaignState:
            gauge.add_metric([state.value], counts.get(state.value, 0))
        yield gauge


def registry(metrics_dir: Path | None, *extra: Collector) -> CollectorRegistry:
    """What /metrics serves: every process's metrics from ``metrics_dir`` when there is
    one (else this process's own), and the ``extra`` collectors read at scrape time."""
    found = CollectorRegistry()
    if metrics_dir is not None:
        metrics_dir.mkdir(parents=True, exist_ok=True)
        MultiProcessCollector(found, path=str(metrics_dir))
    else:
        found.register(_ThisProcess())
    for collector in extra:
        found.register(collector)
    return found
