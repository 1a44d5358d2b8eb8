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
from mailer.web.guards import RateLimiter, client_ip
from mailer.web.stats import _not_found, _signed_in

__all__ = ["registry_for", "router"]

router = APIRouter()


def registry_for(settings: Settings, sessions: sessionmaker) -> CollectorRegistry:
    """The registry an app serves: with the store's campaigns, and the queues of a Redis
    broker when there is one."""
    extra: list[Collector] = [CampaignStates(sessions)]
    if settings.broker_url.startswith(("redis://", "rediss://")):
        extra.append(QueueDepth(settings.broker_url, QUEUES))
    return registry(settings.metrics_dir, *extra)


def _refused(request: Request, token: str) -> Response | None:
    """Why a public app does not answer this request, or None when it may."""
    if not token:
        return _not_found(request)
    signed_in = _signed_in(request, token)
    limit: RateLimiter = request.app.state.stats_limit
    if signed_in is not None and limit.spent(client_ip(request)):
        return Response("too many failed attempts\n", 429, media_type="text/plain")
    if not signed_in:
        if signed_in is not None:
            limit.allow(client_ip(request))
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
        refused = _refused(request, settings.stats_token)
        if refused is not None:
            return refused
    return Response(generate_latest(request.app.state.metrics), media_type=CONTENT_TYPE_LATEST)
