"""``mailer demo``: the whole main job on the embedded defaults, in one command.

A SQLite store with a few demo subscribers, the sample post, sent inline into the
outbox folder, and a summary of what went where. Running it again shows that a
post is never sent twice.
"""

from __future__ import annotations

from pathlib import Path

import click
from rich.table import Table

from mailer.cli import Context, console
from mailer.cli.terminal import shown
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.errors import MailerError
from mailer.sending.dispatch import InlineQueue, create_campaign, progress, start
from mailer.store.db import upgrade
from subscribers import store
from subscribers.models import Status

# The sample post of the repository this package was installed from (`pip install -e .`),
# so the demo also runs from another folder; a wheel has no posts/, and says so.
SAMPLE = Path(__file__).resolve().parents[2] / "posts" / "2026-02-06-ai-weekly.md"
DEMO_READERS = (
    ("ada@example.com", "Ada", Status.CONFIRMED),
    ("grace@example.com", "Grace", Status.CONFIRMED),
    ("linus@example.org", "Linus", Status.CONFIRMED),
    ("margaret@example.org", "Margaret", Status.PENDING),
    ("alan@example.net", "Alan", Status.UNSUBSCRIBED),
)


@click.command()
@click.argument("post", type=click.Path(path_type=Path, dir_okay=False), required=False)
@click.pass_obj
def demo(ctx: Context, post: Path | None) -> None:
    """Send POST (the sample by default) to a few demo subscribers, into the outbox.

    \b
    Example:
      mailer demo                     # the sample post, into ./outbox, store in ./mailer.db
      mailer demo posts/my-post.md
    """
    settings = ctx.settings
    if settings.broker_url or settings.backend != "outbox":
        raise MailerError(
            "the demo runs on the embedded defaults: unset MAILER_BROKER_URL and MAILER_BACKEND"
        )
    post = post or SAMPLE
    if not post.is_file():
        raise MailerError(
            f"the demo needs a post: {shown(post)} is not there. Run it in a clone of the "
            "repository (it has the sample in posts/), or give one: mailer demo POST.md"
        )
    # Read the post before the store is made, so a bad post leaves nothing behind.
    edition = Renderer(settings).render(load_post(post))
    upgrade(ctx.engine)
    consent = store.Consent(source="demo", text="Demo subscriber made by `mailer demo`.")
    with ctx.sessions.begin() as session:
        for email, name, status in DEMO_READERS:
            subscriber = store.add(session, email, consent, name=name, status=status).subscriber
            if status == Status.UNSUBSCRIBED and subscriber is not None:
                store.unsubscribe(session, subscriber, how="demo")
    campaign, new = create_campaign(ctx, edition, post)
    if new or campaign.status == "draft":
        start(ctx, campaign.id, InlineQueue(ctx))
    else:
        console.print(
            f"[yellow]{shown(post)} was sent already (campaign {campaign.id}): not sent again.[/]"
        )
    p = progress(ctx, campaign.id)
    table = Table(title=f"Campaign {campaign.id}: {shown(edition.subject)}", show_header=False)
    table.add_row("status", shown(p.status))
    table.add_row("recipients", f"{p.recipients} confirmed (pending and unsubscribed are left out)")
    table.add_row("sent", str(p.sent))
    table.add_row("failed / unknown", f"{p.failed} / {p.unknown}")
    table.add_row("database", shown(settings.database_url))
    outbox = sorted(settings.outbox_dir.glob(f"{campaign.id}-*.eml"))
    table.add_row("outbox", "\n".join(shown(path) for path in outbox) or "(empty)")
    console.print(table)
    console.print("Open an .eml file in a mail program, or run `mailer preview` for the HTML.")
