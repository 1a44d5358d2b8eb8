"""``mailer stats``: what happened after a send."""

from __future__ import annotations

import click
from rich.table import Table
from sqlalchemy import select

from mailer.cli import Context, console
from mailer.cli.terminal import Format, format_option, print_listing, print_table, shown
from mailer.sending import brake
from mailer.store.ledger import Campaign
from mailer.tracking.stats import CampaignStats, campaign_stats


@click.command()
@click.argument("campaign_id", type=int, required=False)
@format_option
@click.pass_obj
def stats(ctx: Context, campaign_id: int | None, fmt: Format) -> None:
    """Numbers for CAMPAIGN (default: the latest campaigns, one line each).

    --format applies to that overview of the latest campaigns.

    \b
    Examples:
      mailer stats                  # the last ten campaigns
      mailer stats 3                # one campaign: opens, clicks, top links, the brake
      mailer stats --format csv     # the overview for a spreadsheet
    """
    with ctx.sessions() as session:
        if campaign_id is not None:
            brake_view = brake.view(session, ctx.settings, campaign_id)
            _detail(campaign_stats(session, campaign_id, brake=brake_view))
            return
        ids = list(session.scalars(select(Campaign.id).order_by(Campaign.id.desc()).limit(10)))
        rows = [campaign_stats(session, i, top=0, timeline=False) for i in ids]
    columns = ("id", "subject", "sent", "opened", "clicked", "click-through", "bounced", "unsub.")
    listing = [
        (
            s.campaign_id,
            s.subject,
            s.sent,
            s.unique_human_opens,
            s.unique_clicks,
            s.click_through,
            s.bounces,
            s.unsubscribes,
        )
        for s in rows
    ]
    caption = "opened, clicked: readers, each counted once (privacy proxies left out)"
    print_listing(console, fmt, columns, listing, caption=caption)


def _detail(s: CampaignStats) -> None:
    title = f"Campaign {s.campaign_id}: {shown(s.subject)} ({shown(s.status)})"
    table = Table(title=title, show_header=False)
    for label, value in s.figures():
        table.add_row(label, f"{value:,}" if isinstance(value, int) else shown(value))
    print_table(console, table)
    if s.top_links:
        links = Table("clicks", "people", "link", title="Top links")
        for url, clicks, unique in s.top_links:
            links.add_row(f"{clicks:,}", f"{unique:,}", shown(url))
        print_table(console, links)
