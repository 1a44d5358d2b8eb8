"""The web app readers touch (FastAPI on Starlette, served by uvicorn).

FastAPI because the service already validates with pydantic, it gives the JSON API
an OpenAPI schema for free, and underneath it is Starlette, fast enough for the
tracking endpoints to come. ``create_app`` takes the parts the service shares from a
``Runtime`` and builds only the web's own (limits, the event buffer, pages); routes
reach them through ``request.app.state``. Every app serves the reader pages, the
tracking endpoints, the SendGrid webhook, the archive and the stats pages, each
answer with the security headers of ``guards.SecurityHeaders``. Any ASGI server can
run it: ``uvicorn --factory mailer.web:from_environment``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text
from starlette.exceptions import HTTPException

from mailer import logs
from mailer.config import load_settings, refuse_local_defaults
from mailer.errors import ConfigError
from mailer.metrics import use_dir
from mailer.runtime import Runtime
from mailer.sending.dispatch import check_broker
from mailer.tracking.sendgrid import SendGridWebhook
from mailer.web import archive, metrics, stats, subscribe, webhooks
from mailer.web.access_log import REDACT_TOKENS
from mailer.web.guards import AfterResponse, RateLimiter, SecurityHeaders
from mailer.web.pages import Pages, not_found
from mailer.web.tracking import EventBuffer, LinkTables, TrackingRoutes

__all__ = ["create_app", "from_environment"]

log = logging.getLogger(__name__)
# /healthz answers within about this (a load balancer's probe waits a few seconds at most).
HEALTH_BROKER_TIMEOUT = 1.0


def from_environment() -> FastAPI:
    """The app from the ``MAILER_*`` settings, for an ASGI server's ``--factory``."""
    settings = load_settings()
    logs.configure(settings.log_format, logging.INFO)
    use_dir(settings.metrics_dir)
    return create_app(Runtime(settings))


def create_app(runtime: Runtime) -> FastAPI:
    """The app on ``runtime``'s parts; its shutdown closes the runtime's connections."""
    settings = runtime.settings
    refuse_local_defaults(settings, web_app=True)
    sessions = runtime.sessions
    events = EventBuffer(sessions)
    after_response = AfterResponse()
    if not settings.sendgrid_webhook_key:
        log.warning(
            "MAILER_SENDGRID_WEBHOOK_KEY is not set: /webhooks/sendgrid refuses every request"
        )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        access_log = logging.getLogger("uvicorn.access")
        access_log.addFilter(REDACT_TOKENS)  # here: uvicorn has set up its logging by now
        events.start()
        yield
        after_response.wait()  # confirmation emails still going out
        events.close()  # write what the last requests recorded
        runtime.close()

    # No trailing-slash redirects: Starlette builds their Location from the Host header.
    app = FastAPI(
        title=settings.publication_name,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.add_middleware(SecurityHeaders)
    app.add_middleware(TrackingRoutes)  # outermost: the pixel and clicks skip the rest
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.signer = runtime.signer
    app.state.events = events
    app.state.after_response = after_response
    app.state.links = LinkTables(sessions)
    app.state.pages = Pages(runtime.renderer.templates, settings, runtime.publication_lang)
    app.state.optin = runtime.optin  # built now: a backend that cannot start fails here
    app.state.subscribe_limit = RateLimiter(settings.subscribe_rate_limit, settings.broker_url)
    app.state.stats_limit = RateLimiter(stats.FAILED_LOGINS, settings.broker_url, "stats")
    app.state.sendgrid_webhook = SendGridWebhook(
        settings.sendgrid_webhook_key, settings.webhook_replay_seconds
    )
    app.state.metrics = metrics.registry_for(settings, sessions)
    for module in (subscribe, webhooks, archive, stats, metrics):
        app.include_router(module.router)
    app.add_exception_handler(HTTPException, not_found)  # a page for a browser

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> JSONResponse:
        """The database, and the broker when there is one: 503 naming each part that is down."""
        parts = {"database": "ok"}
        try:
            with sessions() as session:
                session.execute(text("SELECT 1"))
        except Exception as exc:  # the point is to report it, not to crash
            parts["database"] = str(exc)[:200]
        if settings.broker_url:
            parts["broker"] = "ok"
            try:
                check_broker(settings.broker_url, HEALTH_BROKER_TIMEOUT)
            except ConfigError as exc:  # the URL in it is sanitized (no password)
                parts["broker"] = str(exc).removesuffix(": nothing was started")[:200]
        if any(state != "ok" for state in parts.values()):
            return JSONResponse({"status": "error", **parts}, status_code=503)
        return JSONResponse({"status": "ok"})

    return app
