"""``mailer stats``: what happened after a send."""

from __future__ import annotations

import click
from rich.table import Table
from sqlalchemy import select

from mailer.cli import Context, console
from mailer.cli.terminal import shown
from mailer.store.ledger import Campaign
from mailer.tracking.stats import CampaignStats, campaign_stats


@click.command()
@click.argument("campaign_id", type=int, required=False)
@click.pass_obj
def stats(ctx: Context, campaign_id: int | None) -> None:
    """Numbers for CAMPAIGN (default: the latest campaigns, one line each)."""
    with ctx.sessions() as session:
        if campaign_id is not None:
            _detail(campaign_stats(session, campaign_id))
            return
        ids = list(session.scalars(select(Campaign.id).order_by(Campaign.id.desc()).limit(10)))
        rows = [campaign_stats(session, i, top=0, timeline=False) for i in ids]
    table = Table(
        "id", "subject", "sent", "opened", "clicked", "click-through", "bounced", "unsub.",
        caption="opened, clicked: readers, each counted once (privacy proxies left out)",
    )  # fmt: skip
    for s in rows:
        table.add_row(
            str(s.campaign_id),
            shown(s.subject),
            f"{s.sent:,}",
            f"{s.unique_human_opens:,}",
            f"{s.unique_clicks:,}",
            f"{s.click_through:.1%}",
            f"{s.bounces:,}",
            f"{s.unsubscribes:,}",
        )
    console.print(table)


def _detail(s: CampaignStats) -> None:
    title = f"Campaign {s.campaign_id}: {shown(s.subject)} ({shown(s.status)})"
    table = Table(title=title, show_header=False)
    for label, value in s.figures():
        table.add_row(label, f"{value:,}" if isinstance(value, int) else value)
    console.print(table)
    if s.top_links:
        links = Table("clicks", "people", "link", title="Top links")
        for url, clicks, unique in s.top_links:
            links.add_row(f"{clicks:,}", f"{unique:,}", shown(url))
        console.print(links)
