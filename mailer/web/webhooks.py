"""``POST /webhooks/sendgrid``: SendGrid's signed events, verified before anything is read.

Unsigned, forged, replayed-too-late or keyless requests get 403 and change nothing;
without a key or a signature header, or with a Content-Length over the cap, they are
refused before their body is read. A verified batch is stored once per event (SendGrid
retries and repeats) and applied: bounces and complaints suppress, unknown deliveries
settle. Events naming a delivery that went to another address are ignored.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from mailer.clock import utcnow
from mailer.metrics import EVENTS
from mailer.sending import brake
from mailer.tracking.events import Event, addressed, apply, record
from mailer.tracking.sendgrid import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendGridWebhook,
    WebhookRefused,
)
from mailer.web.guards import read_body

__all__ = ["router"]

router = APIRouter()
MAX_BODY = 20 * 1024 * 1024  # SendGrid posts batches of events; this is far above one


@router.post("/webhooks/sendgrid", include_in_schema=False)
async def sendgrid_events(request: Request) -> JSONResponse:
    webhook: SendGridWebhook = request.app.state.sendgrid_webhook
    signature = request.headers.get(SIGNATURE_HEADER, "")
    timestamp = request.headers.get(TIMESTAMP_HEADER, "")
    now = utcnow()
    try:
        webhook.check_headers(signature, timestamp, now)
        body = await read_body(request, MAX_BODY)
        if body is None:
            return JSONResponse({"error": "the request is too large"}, 413)
        webhook.verify(body, signature, timestamp, now)
    except WebhookRefused as exc:
        return JSONResponse({"error": str(exc)}, 403)
    try:
        events = webhook.parse(body)
    except ValueError as exc:
        return JSONResponse({"error": f"malformed events: {exc}"}, 400)
    for event in events:
        EVENTS.labels(event.source, event.kind.value).inc()
    new = await run_in_threadpool(_ingest, request, events)
    return JSONResponse({"received": len(events), "new": new})


def _ingest(request: Request, events: list[Event]) -> int:
    settings = request.app.state.settings
    with request.app.state.sessions.begin() as session:
        new = record(session, addressed(session, events))
        apply(session, new, settings.soft_bounce_limit)
        # Mail sent through the same account by something else names no campaign of ours.
        watched = {e.campaign_id for e in new if e.kind in brake.WATCHED}
        for campaign_id in sorted(c for c in watched if c is not None):
            brake.check(session, settings, campaign_id)
    return len(new)
