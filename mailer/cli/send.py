"""``mailer send``: one post to every confirmed subscriber, once."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from sqlalchemy import exists, func, select

from mailer.cli import Context, console
from mailer.cli.progress import CampaignBar
from mailer.cli.terminal import printable, shown
from mailer.dispatch import create_campaign, make_queue, progress, start, sweep
from mailer.edition import Edition
from mailer.errors import ConfigError, MailerError
from mailer.lint import lint
from mailer.message import Batch, Envelope, Sender
from mailer.post import load_post
from mailer.render import Renderer
from subscribers.addresses import normalize
from subscribers.models import Status, Subscriber, Suppression, utcnow

FOLLOW_INTERVAL = 1.0
# Watching must not slow the send: counting a million-row ledger takes 0.1–0.2 s of the
# database, so a refresh waits at least twenty times as long as its count took.
FOLLOW_COST_SHARE = 0.05


@click.command()
@click.argument("post", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--at",
    "when",
    help="Send later: an ISO time, e.g. 2026-12-04T09:00 (zone: MAILER_SEND_TIMEZONE).",
)
@click.option("--dry-run", is_flag=True, help="Show what would be sent, send nothing.")
@click.option("--test-to", metavar="EMAIL", help="Send one test copy to EMAIL only.")
@click.option("--follow", is_flag=True, help="Watch the send until it ends.")
@click.option("--force", is_flag=True, help="Send even if the linter finds errors.")
@click.option(
    "--tracking/--no-tracking",
    default=None,
    help="Open and click tracking [default: MAILER_TRACKING].",
)
@click.pass_obj
def send(
    ctx: Context,
    post: Path,
    when: str | None,
    dry_run: bool,
    test_to: str | None,
    follow: bool,
    force: bool,
    tracking: bool | None,
) -> None:
    """Send POST to every confirmed subscriber (each exactly once, whatever fails)."""
    settings = ctx.settings
    edition = Renderer(settings).render(load_post(post))
    findings = lint(edition, settings)
    errors = [f for f in findings if f.severity == "error"]
    for finding in errors:
        console.print(f"[red]error[/] {shown(finding)}")
    if errors and not (force or dry_run):
        raise MailerError(
            f"{post}: the linter found {len(errors)} error(s); fix them or use --force"
        )
    if test_to:
        _send_test(ctx, edition, test_to)
        return
    if dry_run:
        _dry_run(ctx, edition)
        return
    unsafe = settings.unsafe_local_defaults()
    if settings.backend != "outbox" and unsafe:
        raise ConfigError(
            f"refusing to send through {settings.backend} with local defaults for "
            f"{', '.join(unsafe)}: readers' links would not work or could be forged"
        )
    at = _parse_when(when, settings.send_timezone) if when else None
    campaign, new = create_campaign(ctx, edition, post, tracking)
    inline = not settings.broker_url
    interrupted = campaign.status == "sending" and inline
    if not new and campaign.status != "draft" and not interrupted:
        moment = campaign.finished_at or campaign.started_at or campaign.created_at
        console.print(
            f"{shown(post)} has campaign {campaign.id} already ({shown(campaign.status)}, "
            f"{moment:%Y-%m-%d %H:%M} UTC): nothing to do; `mailer campaigns show {campaign.id}`."
        )
        return
    if at is not None and at > utcnow() and inline:
        _wait_until(at)  # no beat without a broker: this process keeps the appointment
        at = None
    if not inline:
        start(ctx, campaign.id, make_queue(ctx), at)
    else:
        with CampaignBar(edition.subject, 0) as bar:
            queue = make_queue(
                ctx, on_batch=_throttled(lambda: bar.show(progress(ctx, campaign.id)))
            )
            if interrupted:  # a `mailer send` stopped before it finished: go on with it
                console.print(f"Going on with the interrupted send of campaign {campaign.id}.")
                sweep(ctx, queue, quiet_seconds=0)
            else:
                start(ctx, campaign.id, queue, at)
            bar.show(progress(ctx, campaign.id))
    state = progress(ctx, campaign.id)
    if state.status == "scheduled":
        console.print(f"Campaign {campaign.id} is scheduled for {at:%Y-%m-%d %H:%M} UTC.")
        return
    if follow and settings.broker_url:
        follow_campaign(ctx, campaign.id, edition.subject)
    print_summary(ctx, campaign.id)


def _throttled(show: Callable[[], None], every: float = 0.5) -> Callable[[object], None]:
    """A progress callback that redraws at most every ``every`` seconds (counting is a query)."""
    last = 0.0

    def on_batch(_result: object) -> None:
        nonlocal last
        if time.monotonic() - last >= every:
            last = time.monotonic()
            show()

    return on_batch


def follow_campaign(ctx: Context, campaign_id: int, title: str) -> None:
    """A live bar until the campaign stops sending."""
    with CampaignBar(title, 0) as bar:
        while True:
            asked = time.monotonic()
            state = progress(ctx, campaign_id)
            bar.show(state)
            if state.status != "sending":
                return
            counting = time.monotonic() - asked
            time.sleep(max(FOLLOW_INTERVAL, counting / FOLLOW_COST_SHARE))


def print_summary(ctx: Context, campaign_id: int) -> None:
    p = progress(ctx, campaign_id)
    console.print(
        f"Campaign {campaign_id} ({shown(p.status)}): {p.recipients:,} recipients — "
        f"sent {p.sent:,}, failed {p.failed:,}, unknown {p.unknown:,}, skipped {p.skipped:,}, "
        f"still queued {p.queued + p.sending:,}; backend {ctx.settings.backend}"
        + (f" ({ctx.settings.outbox_dir}/)" if ctx.settings.backend == "outbox" else "")
    )
    if p.sending:
        console.print(
            f"[yellow]{p.sending:,} were in flight when a sender stopped:[/] they become unknown "
            f"after MAILER_STALE_CLAIM_SECONDS ({ctx.settings.stale_claim_seconds} s); run "
            "`mailer send` again then, or `mailer campaigns reconcile`."
        )
    if p.last_error:
        console.print(f"[yellow]last error:[/] {shown(p.last_error)}")


def _parse_when(when: str, zone: str) -> dt.datetime:
    try:
        moment = dt.datetime.fromisoformat(when)
    except ValueError as exc:
        raise MailerError(f"--at {when!r}: use an ISO time such as 2026-12-04T09:00") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    return moment.astimezone(dt.UTC)


def _wait_until(at: dt.datetime) -> None:
    with console.status("") as status:
        while (left := (at - utcnow()).total_seconds()) > 0:
            wait = dt.timedelta(seconds=int(left))
            status.update(f"Sending at {at:%Y-%m-%d %H:%M} UTC, in {wait} (Ctrl-C cancels)")
            time.sleep(min(left, 1.0))


def _dry_run(ctx: Context, edition: Edition) -> None:
    with ctx.sessions() as session:
        audience = session.scalar(
            select(func.count())
            .select_from(Subscriber)
            .where(
                Subscriber.status == Status.CONFIRMED,
                ~exists().where(Suppression.email_hash == Subscriber.email_hash),
            )
        )
    batches = -(-audience // ctx.settings.batch_size)
    console.print(
        f"Would send “{shown(edition.subject)}” ({edition.size / 1000:.1f} KB) to {audience:,} "
        f"confirmed subscribers in {batches:,} batches through {ctx.settings.backend}. "
        "Nothing was sent."
    )


def _send_test(ctx: Context, edition: Edition, to: str) -> None:
    settings = ctx.settings
    to = normalize(to)
    envelope = Envelope(
        email=to,
        name="",
        key=f"test-{edition.slug}-{int(time.time())}",
        unsubscribe_url=f"{settings.public_url}/unsubscribe/test",
        view_url=f"{settings.public_url}/archive/{edition.slug}",
    )
    batch = Batch(
        subject=f"[Test] {edition.subject}",
        html=edition.html,
        text=edition.text,
        sender=Sender(settings.sender_email, settings.sender_name),
        envelopes=(envelope,),
    )
    outcomes = ctx.backend.send(batch)
    if not outcomes or outcomes[0].status != "sent":
        reason = outcomes[0].error if outcomes else "the server said to try later"
        raise MailerError(f"the test copy to {to} was not sent: {printable(reason)}")
    console.print(f"Sent a test copy to {to} through {settings.backend}. No campaign was created.")
