"""The web app readers touch (FastAPI on Starlette, served by uvicorn).

FastAPI because the service already validates with pydantic, it gives the JSON API
an OpenAPI schema for free, and underneath it is Starlette, fast enough for the
tracking endpoints to come. ``create_app`` takes the parts the service shares from a
``Runtime`` and builds only the web's own (limits, the event buffer, pages); routes
reach them through ``request.app.state``. Every app serves the reader pages, the
tracking endpoints, the SendGrid webhook, the archive and the stats pages, each
answer with the security headers of ``guards.SecurityHeaders`` (an unexpected error's 500
too). The tracking endpoints, the busiest by far, are answered before FastAPI's middleware
stack (``WebApp``). Any ASGI server can run it:
``uvicorn --factory mailer.web:from_environment``.
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import text
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from mailer import logs
from mailer.config import load_settings, refuse_local_defaults
from mailer.errors import ConfigError
from mailer.metrics import use_dir
from mailer.runtime import Runtime
from mailer.sending.dispatch import check_broker
from mailer.tracking.sendgrid import SendGridWebhook
from mailer.web import archive, metrics, stats, subscribe, webhooks
from mailer.web.access_log import REDACT_TOKENS
from mailer.web.guards import (
    AfterResponse,
    LimitStore,
    LimitUnavailable,
    RateLimiter,
    SecurityHeaders,
)
from mailer.web.pages import Pages, not_found
from mailer.web.tracking import EventBuffer, LinkTables, TrackingRoutes

__all__ = ["WebApp", "create_app", "from_environment"]

log = logging.getLogger(__name__)
# /healthz answers within about this (a load balancer's probe waits a few seconds at most).
HEALTH_BROKER_TIMEOUT = 1.0


class WebApp(FastAPI):
    """FastAPI, with the open pixel and the click redirect answered first, by ``tracking``:
    none of FastAPI's middleware, routing or exception handling runs for them."""

    def __init__(self, tracking: TrackingRoutes, **options: Any) -> None:
        super().__init__(**options)
        self.tracking = tracking

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not await self.tracking.answer(scope, receive, send):
            await super().__call__(scope, receive, send)

    def build_middleware_stack(self) -> ASGIApp:
        # Around Starlette's ServerErrorMiddleware (outermost of its stack, out of reach of
        # add_middleware), so that the 500 it answers an unexpected error with has them too.
        return SecurityHeaders(super().build_middleware_stack())


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
        # What start-up built (FastAPI, SQLAlchemy, the templates: some 150k objects) lives as
        # long as the app. Frozen, no full collection walks it; unfrozen, each one (about
        # every 30,000 tracking requests) held every request for a quarter of a second.
        gc.freeze()
        yield
        gc.unfreeze()
        after_response.wait()  # confirmation emails still going out
        events.close()  # write what the last requests recorded
        runtime.close()

    pages = Pages(runtime.renderer.templates, settings, runtime.publication_lang)
    # No trailing-slash redirects: Starlette builds their Location from the Host header.
    app = WebApp(
        TrackingRoutes(runtime.signer, events, LinkTables(sessions), pages),
        title=settings.publication_name,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.signer = runtime.signer
    app.state.events = events
    app.state.after_response = after_response
    app.state.pages = pages
    app.state.optin = runtime.optin  # built now: a backend that cannot start fails here
    limits = LimitStore(settings.broker_url)
    app.state.subscribe_limit = RateLimiter(settings.subscribe_rate_limit, limits)
    app.state.stats_limit = RateLimiter(stats.FAILED_LOGINS, limits, "stats")
    app.state.sendgrid_webhook = SendGridWebhook(
        settings.sendgrid_webhook_key, settings.webhook_replay_seconds
    )
    app.state.metrics = metrics.registry_for(settings, sessions)
    for module in (subscribe, webhooks, archive, stats, metrics):
        app.include_router(module.router)
    app.add_exception_handler(HTTPException, not_found)  # a page for a browser

    @app.exception_handler(LimitUnavailable)
    async def limit_unavailable(request: Request, exc: Exception) -> Response:
        """A limited page (the stats pages; /metrics answers its own text) while the limit's
        Redis is away: refused, and the visitor told when to come back."""
        assert isinstance(exc, LimitUnavailable)
        await pages.ask_lang()
        return pages.busy(exc.headers)

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
