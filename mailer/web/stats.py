"""``/stats/{campaign}``: a campaign's numbers and chart, read-only, behind a token.

The token is ``MAILER_STATS_TOKEN``; without the setting the pages do not exist. Scripts
send it as ``Authorization: Bearer``; people type it into the page's form, which sets an
HttpOnly, SameSite=Strict cookie. Never in the URL, where access logs and browser history
keep it. Failed attempts are limited per client address.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
from urllib.parse import parse_qs

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from markupsafe import Markup

from mailer.errors import MailerError
from mailer.sending import brake
from mailer.tracking.stats import campaign_stats, chart_svg
from mailer.web.guards import RateLimiter, client_ip, read_body

__all__ = ["FAILED_LOGINS", "Access", "access", "not_found", "router"]

router = APIRouter()
FAILED_LOGINS = "10/minute"  # per client address: guessing a long token takes forever
COOKIE = "mailer_stats"
MAX_ID = 2**63 - 1  # the id column's range (BIGINT): larger numbers name nothing


def _session(token: str) -> str:
    """The cookie's value: derived from the token, so the browser never holds the token
    itself and changing MAILER_STATS_TOKEN signs everyone out."""
    return hmac.new(token.encode(), b"mailer stats session", hashlib.sha256).hexdigest()


def _same(offered: str, expected: str) -> bool:
    return hmac.compare_digest(offered.encode(), expected.encode())


def not_found(request: Request) -> Response:
    return request.app.state.pages.not_found()


def _login(request: Request, status: int = 401, error: str = "") -> Response:
    """The sign-in form; a 401 names the scheme scripts use (browsers do not prompt for it)."""
    response = request.app.state.pages.render("stats_login", status, error=error)
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="mailer stats"'
    return response


def _signed_in(request: Request, token: str) -> bool | None:
    """Whether the request carries the token (as a Bearer header, or the form's cookie);
    None when it offers nothing at all."""
    header = request.headers.get("authorization")
    if header is not None:
        scheme, _, offered = header.partition(" ")
        return scheme.lower() == "bearer" and _same(offered.strip(), token)
    cookie = request.cookies.get(COOKIE)
    return None if cookie is None else _same(cookie, _session(token))


class Access(enum.Enum):
    OFF = "off"  # no MAILER_STATS_TOKEN: the figures are not served at all
    ANONYMOUS = "anonymous"  # nothing offered
    SPENT = "spent"  # too many failed attempts from this address, even with the right token
    WRONG = "wrong"  # a wrong token, counted as a failed attempt
    GRANTED = "granted"


def access(request: Request) -> Access:
    """The one check of the stats pages and ``/metrics``: the token as a Bearer header or
    the form's cookie, failed attempts limited per client address."""
    token = request.app.state.settings.stats_token
    if not token:
        return Access.OFF
    signed_in = _signed_in(request, token)
    if signed_in is None:
        return Access.ANONYMOUS
    limit: RateLimiter = request.app.state.stats_limit
    if limit.spent(client_ip(request)):  # no guess counts past the limit
        return Access.SPENT
    if not signed_in:
        limit.allow(client_ip(request))
        return Access.WRONG
    return Access.GRANTED


@router.get("/stats/{campaign_id}", include_in_schema=False)
def stats_page(request: Request, campaign_id: int) -> Response:
    if not 0 < campaign_id <= MAX_ID:
        return not_found(request)
    granted = access(request)
    if granted is Access.OFF:
        return not_found(request)
    if granted is Access.SPENT:
        return _login(request, 429, request.app.state.pages.strings["too_many"])
    if granted is not Access.GRANTED:
        return _login(request)
    try:
        with request.app.state.sessions() as session:
            view = brake.view(session, request.app.state.settings, campaign_id)
            stats = campaign_stats(session, campaign_id, brake=view)
    except MailerError:
        return not_found(request)
    chart = Markup(chart_svg(stats.timeline))
    return request.app.state.pages.render("stats", stats=stats, chart=chart)


@router.post("/stats/{campaign_id}", include_in_schema=False)
async def stats_login(request: Request, campaign_id: int) -> Response:
    """The page's form: the right token sets the cookie and goes back to the page."""
    settings = request.app.state.settings
    await request.app.state.pages.ask_lang()  # the pages' language may wait for the database
    if not settings.stats_token or not 0 < campaign_id <= MAX_ID:
        return not_found(request)
    limit: RateLimiter = request.app.state.stats_limit
    if await limit.exhausted(client_ip(request)):
        return _login(request, 429, request.app.state.pages.strings["too_many"])
    body = await read_body(request)
    fields = parse_qs((body or b"").decode("utf-8", "replace"))
    if not _same(fields.get("token", [""])[0], settings.stats_token):
        await limit.allowed(client_ip(request))
        return _login(request, 401, "That is not the stats token.")
    # Relative to the page the form is on, as the cookie's path is (left to the browser: the
    # folder of that page): right under whatever path the app is reached, through a proxy
    # that takes a prefix off or directly, and never from the Host header.
    response = RedirectResponse(str(campaign_id), 303)
    response.set_cookie(
        COOKIE,
        _session(settings.stats_token),
        path=None,
        httponly=True,
        samesite="strict",
        secure=settings.public_url.startswith("https:"),
    )
    return response
