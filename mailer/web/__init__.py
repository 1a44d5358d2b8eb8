"""The web app readers touch (FastAPI on Starlette, served by uvicorn).

FastAPI because the service already validates with pydantic, it gives the JSON API
an OpenAPI schema for free, and underneath it is Starlette, fast enough for the
tracking endpoints to come. ``create_app`` is the only place the app's parts are
built; routes reach them through ``request.app.state``. Every app serves the
reader pages, the tracking endpoints, the SendGrid webhook, the archive and the
stats pages, each answer with the security headers of ``guards.SecurityHeaders``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import text

from mailer.config import Settings
from mailer.content.render import Renderer
from mailer.delivery import make_backend
from mailer.errors import ConfigError
from mailer.sending.dispatch import check_broker
from mailer.store.db import check_schema, make_engine, make_sessions
from mailer.tokens import Signer
from mailer.tracking.sendgrid import SendGridWebhook
from mailer.web import archive, stats, subscribe, tracking, webhooks
from mailer.web.access_log import REDACT_TOKENS
from mailer.web.guards import AfterResponse, RateLimiter, SecurityHeaders
from mailer.web.pages import Pages
from mailer.web.tracking import EventBuffer, LinkTables
from subscribers.optin import OptIn

__all__ = ["create_app"]

log = logging.getLogger(__name__)
# /healthz answers within about this (a load balancer's probe waits a few seconds at most).
HEALTH_BROKER_TIMEOUT = 1.0


def create_app(settings: Settings) -> FastAPI:
    if "MAILER_PUBLIC_URL" not in settings.unsafe_local_defaults() and (
        "MAILER_SECRET_KEYS" in settings.unsafe_local_defaults()
    ):
        raise ConfigError(
            f"MAILER_PUBLIC_URL is {settings.public_url} but MAILER_SECRET_KEYS is the published "
            "local default: set a long random secret, or anyone can forge readers' links"
        )
    engine = make_engine(settings.database_url)
    check_schema(engine)
    sessions = make_sessions(engine)
    renderer = Renderer(settings)
    signer = Signer(settings.secret_keys)
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
        engine.dispose()

    # No trailing-slash redirects: Starlette builds their Location from the Host header.
    app = FastAPI(
        title=settings.publication_name,
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        redirect_slashes=False,
    )
    app.add_middleware(SecurityHeaders)
    app.state.settings = settings
    app.state.sessions = sessions
    app.state.signer = signer
    app.state.events = events
    app.state.after_response = after_response
    app.state.links = LinkTables(sessions)
    app.state.pages = Pages(renderer.templates, settings)
    app.state.optin = OptIn(settings, sessions, signer, make_backend(settings), renderer)
    app.state.subscribe_limit = RateLimiter(settings.subscribe_rate_limit, settings.broker_url)
    app.state.stats_limit = RateLimiter(stats.FAILED_LOGINS, settings.broker_url, "stats")
    app.state.sendgrid_webhook = SendGridWebhook(
        settings.sendgrid_webhook_key, settings.webhook_replay_seconds
    )
    for module in (subscribe, tracking, webhooks, archive, stats):
        app.include_router(module.router)

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
