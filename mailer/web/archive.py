"""The public archive: every sent edition's web version, the "view in browser" link.

The page is the frozen edition itself, without anything of any one reader: the
unsubscribe link becomes the subscribe page, and there is no tracking pixel.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, Response
from sqlalchemy import select
from sqlalchemy.orm import Session

from mailer.clock import utcnow
from mailer.store.ledger import PUBLISHED, Campaign
from mailer.web.feed import FEED_ENTRIES, atom_feed

__all__ = ["feed_campaigns", "router"]

router = APIRouter()
# An edition is email HTML: its <style> blocks and style attributes, images and a web font
# from anywhere, as in a mail client; still no script, no frame, no form.
EDITION_CSP = (
    "default-src 'none'; style-src 'unsafe-inline' https:; img-src https: http: data:; "
    "font-src https: data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
)


@router.get("/archive", response_class=HTMLResponse)
def archive(request: Request) -> HTMLResponse:
    with request.app.state.sessions() as session:
        rows = session.execute(
            select(Campaign.slug, Campaign.subject, Campaign.started_at)
            .where(PUBLISHED)
            .order_by(Campaign.started_at.desc())
        ).all()
    return request.app.state.pages.render("archive", editions=rows)


@router.get("/archive/{slug}", response_class=HTMLResponse)
def edition(request: Request, slug: str) -> Response:
    with request.app.state.sessions() as session:
        campaign = session.scalar(
            select(Campaign)
            .where(Campaign.slug == slug, PUBLISHED)
            .order_by(Campaign.id.desc())
            .limit(1)
        )
    if campaign is None:
        return request.app.state.pages.not_found()
    public_url = request.app.state.settings.public_url
    # The whole post, also when the email was shortened to stay under Gmail's clip.
    html, _text = (
        campaign.frozen_edition()
        .for_web()
        .personalize(
            unsubscribe_url=f"{public_url}/subscribe", view_url=f"{public_url}/archive/{slug}"
        )
    )
    return HTMLResponse(html, headers={"Content-Security-Policy": EDITION_CSP})


def feed_campaigns(session: Session) -> list[Campaign]:
    """The newest published campaigns, enough for the feed's entries (one per slug)."""
    return list(
        session.scalars(
            select(Campaign)
            .where(PUBLISHED)
            .order_by(Campaign.started_at.desc(), Campaign.id.desc())
            .limit(FEED_ENTRIES * 2)
        )
    )


@router.get("/feed.xml")
def feed(request: Request) -> Response:
    with request.app.state.sessions() as session:
        xml = atom_feed(feed_campaigns(session), request.app.state.settings, utcnow())
    return Response(xml, media_type="application/atom+xml")
