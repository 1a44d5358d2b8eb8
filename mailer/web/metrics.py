"""``/metrics``: the service for Prometheus, behind the stats token once the app is public.

What it serves is ``mailer.metrics.registry``: every process's counters when
``MAILER_METRICS_DIR`` is set (else this process's own), the broker's queue depths and
the campaigns by state. On an app at a public ``MAILER_PUBLIC_URL`` it is guarded as
``/stats/…`` is, by the same check and the same limit on failed attempts: absent without
``MAILER_STATS_TOKEN``, and otherwise for ``Authorization: Bearer <token>`` only
(Prometheus: ``authorization: {credentials: …}``). A local app answers anyone on it.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.registry import Collector
from sqlalchemy.orm import sessionmaker

from mailer.config import Settings
from mailer.metrics import CampaignStates, QueueDepth, registry
from mailer.sending.dispatch import QUEUES
from mailer.web.guards import LimitUnavailable
from mailer.web.stats import Access, access, not_found

__all__ = ["registry_for", "router"]

router = APIRouter()


def registry_for(settings: Settings, sessions: sessionmaker) -> CollectorRegistry:
    """The registry an app serves: with the store's campaigns, and the queues of a Redis
    broker when there is one."""
    extra: list[Collector] = [CampaignStates(sessions)]
    if settings.broker_url.startswith(("redis://", "rediss://")):
        extra.append(QueueDepth(settings.broker_url, QUEUES))
    return registry(settings.metrics_dir, *extra)


def _refused(request: Request) -> Response | None:
    """Why a public app does not answer this request, or None when it may."""
    try:
        granted = access(request)
    except LimitUnavailable as exc:  # as text, like the 401 and 429 a scraper reads
        text = "the failed-attempts limit is unavailable: try again later\n"
        return Response(text, 503, headers=exc.headers, media_type="text/plain")
    if granted is Access.OFF:
        return not_found(request)
    if granted is Access.SPENT:
        return Response("too many failed attempts\n", 429, media_type="text/plain")
    if granted is not Access.GRANTED:
        return Response(
            "send the stats token as Authorization: Bearer\n",
            401,
            headers={"WWW-Authenticate": 'Bearer realm="mailer metrics"'},
            media_type="text/plain",
        )
    return None


@router.get("/metrics", include_in_schema=False)
def scrape(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    if "MAILER_PUBLIC_URL" not in settings.unsafe_local_defaults():
        refused = _refused(request)
        if refused is not None:
            return refused
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
