"""``POST /webhooks/sendgrid``: SendGrid's signed events, verified before anything is read.

Unsigned, forged, replayed-too-late or keyless requests get 403 and change nothing.
A verified batch is stored once per event (SendGrid retries and repeats) and
applied: bounces and complaints suppress, unknown deliveries settle.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from mailer.events import Event, apply, record
from mailer.webhooks.sendgrid import (
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    SendGridWebhook,
    WebhookRefused,
)
from subscribers.models import utcnow

__all__ = ["router"]

router = APIRouter()
MAX_BODY = 20 * 1024 * 1024  # SendGrid posts batches of events; this is far above one


@router.post("/webhooks/sendgrid", include_in_schema=False)
async def sendgrid_events(request: Request) -> JSONResponse:
    webhook: SendGridWebhook = request.app.state.sendgrid_webhook
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "the request is too large"}, 413)
    try:
        webhook.verify(
            body,
            request.headers.get(SIGNATURE_HEADER, ""),
            request.headers.get(TIMESTAMP_HEADER, ""),
            utcnow(),
        )
    except WebhookRefused as exc:
        return JSONResponse({"error": str(exc)}, 403)
    try:
        events = webhook.parse(body)
    except ValueError as exc:
        return JSONResponse({"error": f"malformed events: {exc}"}, 400)
    new = await run_in_threadpool(_ingest, request, events)
    return JSONResponse({"received": len(events), "new": new})


def _ingest(request: Request, events: list[Event]) -> int:
    settings = request.app.state.settings
    with request.app.state.sessions.begin() as session:
        new = record(session, events)
        apply(session, new, settings.soft_bounce_limit)
    return len(new)
