"""What the send path tells the operator: a log record at each boundary, and the metrics.

A batch (its campaign, its number, how many readers and what became of them, the
provider's answer, how long it took), a retry and its reason, a batch that gave up, a
campaign paused, resumed or cancelled and why. Records carry ids and counts, never an
address; a provider's error is clipped (``mailer.logs``). The facts themselves are in
the ledger: a record says what happened, it is not the only place that knows.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from mailer.logs import clip
from mailer.metrics import BATCH_SECONDS, MESSAGES, PROVIDER_ERRORS

if TYPE_CHECKING:
    from mailer.sending.batch import BatchResult

__all__ = ["batch_done", "gave_up", "paused", "retrying", "steered"]

log = logging.getLogger(__name__)


def batch_done(
    backend: str, campaign_id: int, batch: int, result: BatchResult, seconds: float
) -> None:
    """One batch's record and counts; a batch that made no request has no latency."""
    outcomes = {
        "sent": result.sent,
        "failed": result.failed,
        "unknown": result.unknown,
        "deferred": result.requeued,
        "skipped": result.skipped,
    }
    for outcome, count in outcomes.items():
        if count:
            MESSAGES.labels(backend, outcome).inc(count)
    if result.provider_status:
        BATCH_SECONDS.labels(backend).observe(seconds)
    if result.provider_status not in ("", "ok"):
        PROVIDER_ERRORS.labels(backend, result.provider_status).inc()
    fields = {
        "campaign": campaign_id,
        "batch": batch,
        "backend": backend,
        "count": result.sent + result.failed + result.unknown + result.requeued,
        **outcomes,
        "provider_status": result.provider_status or "none",
        "seconds": round(seconds, 3),
    }
    if result.error:
        fields["error"] = clip(result.error)
    # A batch with nothing left to do (its campaign paused, a task delivered twice): DEBUG.
    busy = fields["count"] or result.skipped or result.error
    log.log(logging.INFO if busy else logging.DEBUG, "batch done", extra=fields)


def retrying(campaign_id: int, batch: int, attempt: int, delay: float, reason: str) -> None:
    """A batch with readers back in the queue, tried again in ``delay`` seconds."""
    log.warning(
        "batch retried",
        extra={
            "campaign": campaign_id,
            "batch": batch,
            "attempt": attempt,
            "delay": round(delay, 1),
            "reason": clip(reason),
        },
    )


def gave_up(campaign_id: int, batch: int, reason: str) -> None:
    log.error(
        "batch gave up after retries",
        extra={"campaign": campaign_id, "batch": batch, "reason": clip(reason)},
    )


def paused(campaign_id: int, reason: str) -> None:
    """The send path stopped a campaign for the operator to look at."""
    log.warning("campaign paused", extra={"campaign": campaign_id, "reason": clip(reason)})


def steered(campaign_id: int, action: str) -> None:
    """The operator paused, resumed or cancelled a campaign (``action``: its past tense)."""
    log.info(f"campaign {action}", extra={"campaign": campaign_id, "reason": "the operator"})
