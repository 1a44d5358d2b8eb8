"""The Friday send: the posts whose ``scheduled`` date is today, started once each.

Beat calls this at the configured weekday and time. Starting is idempotent: a post
with a campaign is not started again, not even when the operator cancelled it, so a
repeated tick, a redelivered task or a second beat process sends nothing twice and
nothing the operator stopped.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from mailer.content.lint import lint
from mailer.content.post import Post, load_post
from mailer.content.render import Renderer
from mailer.errors import MailerError
from mailer.sending.dispatch import Queue, create_campaign, start

if TYPE_CHECKING:  # the Runtime is built above this layer and handed down
    from mailer.runtime import Runtime

__all__ = ["due_posts", "send_scheduled_posts"]

log = logging.getLogger(__name__)


def due_posts(posts_dir: Path, today: dt.date) -> list[Post]:
    """The posts in ``posts_dir`` scheduled for ``today``; a broken post is logged, not fatal."""
    if not posts_dir.is_dir():
        log.error(
            "MAILER_POSTS_DIR=%s is not a folder here: no post can be sent", posts_dir.resolve()
        )
        return []
    due = []
    for path in sorted(posts_dir.glob("*.md")):
        try:
            post = load_post(path)
        except MailerError as exc:
            log.error("cannot load a post, skipped: %s", exc)
            continue
        scheduled = post.scheduled
        if isinstance(scheduled, dt.datetime):
            scheduled = scheduled.date()
        if scheduled == today:
            due.append(post)
    return due


def send_scheduled_posts(rt: Runtime, queue: Queue, today: dt.date) -> list[str]:
    """Start every post due today that has no campaign yet; returns the slugs started.
    (A cancelled post starts again only when the operator asks: ``mailer send --again``.)

    A post the linter finds errors in is not sent (as `mailer send` would not without
    --force); one post failing does not stop the others.
    """
    renderer = Renderer(rt.settings, fetch_images=True)  # measured once here, then cached
    started = []
    for post in due_posts(rt.settings.posts_dir, today):
        try:
            edition = renderer.render(post)
            findings = lint(edition, rt.settings, post)
            for finding in findings:
                log.warning("%s: %s", post.path, finding)
            if any(f.severity == "error" for f in findings):
                log.error("%s has lint errors: not sent; fix it and run `mailer send`", post.path)
                continue
            campaign, _new = create_campaign(rt, edition, post.path)
            if start(rt, campaign.id, queue):
                log.info("started campaign %s for %s", campaign.id, post.path)
                started.append(post.slug)
            else:
                log.info("%s has campaign %s already (%s)", post.path, campaign.id, campaign.status)
        except MailerError as exc:
            log.error("%s: not sent: %s", post.path, exc)
    return started
