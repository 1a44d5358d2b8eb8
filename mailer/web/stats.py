"""``GET /stats/{campaign}``: a campaign's numbers and chart, read-only, behind a token.

The token is ``MAILER_STATS_TOKEN``, given as ``?token=`` or as the password of HTTP
basic auth; without the setting the pages do not exist.
"""

from __future__ import annotations

import base64
import binascii
import hmac

from fastapi import APIRouter, Request
from fastapi.responses import Response
from markupsafe import Markup

from mailer.errors import MailerError
from mailer.stats import campaign_stats, chart_svg

__all__ = ["router"]

router = APIRouter()


def _allowed(request: Request, token: str) -> bool:
    offered = request.query_params.get("token", "")
    header = request.headers.get("authorization", "")
    if header.lower().startswith("basic "):
        try:
            offered = base64.b64decode(header[6:]).decode().partition(":")[2]
        except (binascii.Error, ValueError):  # not base64, not ASCII, not UTF-8
            offered = ""
    return bool(offered) and hmac.compare_digest(offered.encode(), token.encode())


@router.get("/stats/{campaign_id}", include_in_schema=False)
def stats_page(request: Request, campaign_id: int) -> Response:
    pages = request.app.state.pages
    token = request.app.state.settings.stats_token
    if not token:
        return pages.message(pages.strings["not_found_title"], pages.strings["not_found"], 404)
    if not _allowed(request, token):
        return Response(
            "stats: sign in with the stats token as password",
            401,
            headers={"WWW-Authenticate": 'Basic realm="mailer stats"'},
        )
    try:
        with request.app.state.sessions() as session:
            stats = campaign_stats(session, campaign_id)
    except MailerError:
        return pages.message(pages.strings["not_found_title"], pages.strings["not_found"], 404)
    return pages.render("stats", stats=stats, chart=Markup(chart_svg(stats.timeline)))
