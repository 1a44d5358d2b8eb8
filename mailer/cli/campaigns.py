"""``mailer campaigns …``: see and steer sends."""

from __future__ import annotations

import datetime as dt

import click
from rich.table import Table
from sqlalchemy import select

from mailer.cli import Context, console
from mailer.cli.send import explain_unsettled, follow_campaign, print_summary
from mailer.cli.terminal import Format, format_option, print_listing, print_table, shown
from mailer.sending import brake, dispatch, telemetry
from mailer.store.ledger import Campaign


@click.group()
def campaigns() -> None:
    """List, inspect, pause, resume and cancel campaigns.

    \b
    Examples:
      mailer campaigns list
      mailer campaigns show 3 --follow
    """


@campaigns.command("list")
@click.option("--limit", default=20, show_default=True)
@format_option
@click.pass_obj
def list_(ctx: Context, limit: int, fmt: Format) -> None:
    """The latest campaigns, newest first, with when a scheduled one goes out.

    \b
    Examples:
      mailer campaigns list
      mailer campaigns list --limit 100 --format json
    """
    with ctx.sessions() as session:
        rows = list(session.scalars(select(Campaign).order_by(Campaign.id.desc()).limit(limit)))
    columns = (
        "id",
        "post",
        "status",
        "recipients",
        "created (UTC)",
        "sends at (UTC)",
        "finished (UTC)",
    )
    listing = [
        (c.id, c.slug, str(c.status), c.recipients, c.created_at, c.scheduled_at, c.finished_at)
        for c in rows
    ]
    print_listing(console, fmt, columns, listing)


@campaigns.command()
@click.argument("campaign_id", type=int)
@click.option("--follow", is_flag=True, help="Watch it until it stops sending.")
@click.pass_obj
def show(ctx: Context, campaign_id: int, follow: bool) -> None:
    """Where a campaign stands: every recipient's state, counted.

    \b
    Example:
      mailer campaigns show 3 --follow
    """
    p = dispatch.progress(ctx, campaign_id)
    with ctx.sessions() as session:
        brake_state = brake.describe(session, ctx.settings, campaign_id)
    table = Table(show_header=False)
    for label, value in (
        ("status", shown(p.status)),
        ("recipients", f"{p.recipients:,}"),
        ("sent", f"{p.sent:,}"),
        ("failed", f"{p.failed:,}"),
        ("unknown (settle with provider events)", f"{p.unknown:,}"),
        ("skipped (left the list)", f"{p.skipped:,}"),
        ("queued", f"{p.queued:,}"),
        ("in flight", f"{p.sending:,}"),
        ("started (UTC)", f"{p.started_at:%Y-%m-%d %H:%M:%S}" if p.started_at else ""),
        ("finished (UTC)", f"{p.finished_at:%Y-%m-%d %H:%M:%S}" if p.finished_at else ""),
        ("last error", shown(p.last_error)),
        ("reputation brake", brake_state),
    ):
        table.add_row(label, value)
    print_table(console, table)
    explain_unsettled(ctx, campaign_id, p)
    if follow:
        follow_campaign(ctx, campaign_id, f"campaign {campaign_id}")


@campaigns.command()
@click.argument("campaign_id", type=int)
@click.pass_obj
def pause(ctx: Context, campaign_id: int) -> None:
    """Stop handing out batches; batches in flight finish.

    \b
    Example:
      mailer campaigns pause 3
    """
    dispatch.pause(ctx, campaign_id)
    telemetry.steered(campaign_id, "paused")
    console.print(
        f"Campaign {campaign_id} paused. `mailer campaigns resume {campaign_id}` goes on."
    )


@campaigns.command()
@click.argument("campaign_id", type=int)
@click.option("--force", is_flag=True, help="Go on past the reputation brake.")
@click.pass_obj
def resume(ctx: Context, campaign_id: int, force: bool) -> None:
    """Send what is still queued (never what was sent or is unknown).

    \b
    Example:
      mailer campaigns resume 3
    """
    if ctx.settings.broker_url:
        dispatch.check_broker(ctx.settings.broker_url)
    with ctx.sessions.begin() as session:
        brake.release(session, campaign_id, force)
    in_flight = dispatch.resume(ctx, campaign_id, dispatch.make_queue(ctx))
    telemetry.steered(campaign_id, "resumed")
    print_summary(ctx, campaign_id, in_flight=in_flight)


@campaigns.command()
@click.argument("campaign_id", type=int)
@click.confirmation_option(prompt="Cancel this campaign? Queued recipients will not get it.")
@click.pass_obj
def cancel(ctx: Context, campaign_id: int) -> None:
    """Stop a campaign for good: its queued readers do not get it.

    \b
    Example:
      mailer campaigns cancel 3 --yes
    """
    dispatch.cancel(ctx, campaign_id)
    telemetry.steered(campaign_id, "cancelled")
    console.print(f"Campaign {campaign_id} cancelled.")


@campaigns.command()
@click.argument("campaign_id", type=int)
@click.option(
    "--resend/--no-resend",
    default=None,
    help="What to do with unknown rows no event settles [default: MAILER_UNKNOWN_POLICY].",
)
@click.pass_obj
def reconcile(ctx: Context, campaign_id: int, resend: bool | None) -> None:
    """Settle unknown deliveries from the provider's events, then by policy.

    \b
    Example:
      mailer campaigns reconcile 3 --resend
    """
    window = dt.timedelta(seconds=ctx.settings.unknown_window_seconds)
    queue = dispatch.make_queue(ctx)
    done = dispatch.reconcile(ctx, campaign_id, queue, resend, unknown_window=window)
    console.print(
        f"Campaign {campaign_id}: {done.settled:,} settled as sent from provider events, "
        f"{done.requeued:,} queued again, {done.still_unknown:,} still unknown."
    )
    if done.resendable_at is not None:
        console.print(
            f"Events may still settle them; from {done.resendable_at:%Y-%m-%d %H:%M} UTC "
            f"(MAILER_UNKNOWN_WINDOW_SECONDS after their request) `mailer campaigns reconcile "
            f"{campaign_id} --resend` sends again those no event has settled."
        )
