"""``mailer send``: one post to every confirmed subscriber, once."""

from __future__ import annotations

import datetime as dt
import sys
import time
from collections.abc import Callable
from pathlib import Path
from zoneinfo import ZoneInfo

import click
from sqlalchemy import func, select
from sqlalchemy.exc import OperationalError

from mailer.cli import Context, console
from mailer.cli.progress import CampaignBar
from mailer.cli.terminal import finding_text, plural, printable, shown
from mailer.clock import utcnow
from mailer.config import Settings, refuse_local_defaults
from mailer.content.lint import group_findings, lint
from mailer.content.post import load_post
from mailer.content.render import Renderer
from mailer.delivery import POLICY_REFUSAL
from mailer.delivery.message import Batch, Envelope, Sender
from mailer.edition import Edition
from mailer.errors import MailerError
from mailer.sending.batch import BatchResult, pause_with_error
from mailer.sending.dispatch import (
    Progress,
    campaign_of,
    check_broker,
    create_campaign,
    make_queue,
    progress,
    start,
    sweep,
)
from mailer.store.ledger import Campaign, CampaignState, Delivery, DeliveryState
from subscribers import audience
from subscribers.addresses import normalize
from subscribers.models import Subscriber

FOLLOW_INTERVAL = 1.0
# Watching must not slow the send: counting a million-row ledger takes 0.1–0.2 s of the
# database, so a refresh waits at least twenty times as long as its count took.
FOLLOW_COST_SHARE = 0.05
# How long --follow waits for a database that stopped answering (a restart, a failover)
# before it gives up; the send itself goes on without the watch.
FOLLOW_PATIENCE = 120.0
UNSETTLED_EXIT = 3
# A dry run that finds the send would be refused ends as the refused send does (mailer's
# error status).
REFUSED_EXIT = 2
# Addresses a dry run names before "… and N more" (--list names them all).
DRY_RUN_SHOWN = 5


@click.command()
@click.argument("post", type=click.Path(path_type=Path, dir_okay=False))
@click.option(
    "--at",
    "when",
    help="Send later: an ISO time, e.g. 2026-12-04T09:00 (zone: MAILER_SEND_TIMEZONE).",
)
@click.option(
    "--dry-run", is_flag=True, help="Say who would get it and what would stop it; send nothing."
)
@click.option(
    "--list", "list_all", is_flag=True, help="With --dry-run: every address, not the first few."
)
@click.option(
    "--test-to",
    metavar="EMAIL[,EMAIL…]",
    multiple=True,
    help="Send a test copy to these addresses (and MAILER_SEED_LIST) only; repeatable.",
)
@click.option("--follow", is_flag=True, help="Watch the send until it ends.")
@click.option("--force", is_flag=True, help="Send even if the linter finds errors.")
@click.option(
    "--again",
    is_flag=True,
    help="Start POST again after its campaign was cancelled (to the readers it did not reach).",
)
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
    list_all: bool,
    test_to: tuple[str, ...],
    follow: bool,
    force: bool,
    again: bool,
    tracking: bool | None,
) -> None:
    """Send POST to every confirmed subscriber (each exactly once, whatever fails).

    Exit status 3 when the send (inline, or watched with --follow) ended `unsettled`:
    some readers' requests got no answer, so whether they got it is not known yet.

    \b
    Examples:
      mailer send posts/2026-02-06-ai-weekly.md --dry-run    # who would get it
      mailer send posts/2026-02-06-ai-weekly.md --test-to me@example.org,you@example.org
      mailer send posts/2026-02-06-ai-weekly.md --at 2026-02-06T09:00 --follow
    """
    settings = ctx.settings
    # A mistyped time is refused before the post is even read: nothing has started.
    at = _parse_when(when, settings.send_timezone) if when else None
    loaded = load_post(post)
    edition = Renderer(settings, fetch_images=True).render(loaded)
    findings = lint(edition, settings, loaded)
    errors = [f for f in findings if f.severity == "error"]
    for group in group_findings(errors):
        console.print(finding_text(group))
    lint_refusal = (
        f"{post}: the linter found {plural(len(errors), 'error')}; "
        f"fix {'it' if len(errors) == 1 else 'them'} or use --force"
        if errors and not force
        else ""
    )
    if test_to:
        _send_test(ctx, edition, _test_addresses(test_to, settings))
        return
    if dry_run:
        if _dry_run(ctx, post, edition, again=again, list_all=list_all, lint_refusal=lint_refusal):
            sys.exit(REFUSED_EXIT)  # the status the real send would end with: a script sees it
        return
    if lint_refusal:
        raise MailerError(lint_refusal)
    refuse_local_defaults(settings, campaign=True)
    _preflight(ctx)
    campaign, new = create_campaign(ctx, edition, post, tracking, again=again)
    inline = not settings.broker_url
    interrupted = campaign.status == "sending" and inline
    if not new and campaign.status != "draft" and not interrupted:
        console.print(_has_campaign_already(post, campaign))
        return
    if at is not None and at > utcnow() and inline:
        _wait_until(at)  # no beat without a broker: this process keeps the appointment
        at = None
    if not inline:
        _start_on_broker(ctx, campaign.id, at)
    else:
        with CampaignBar(edition.subject, 0) as bar:
            queue = make_queue(
                ctx, on_batch=_on_batch(lambda: bar.show(progress(ctx, campaign.id)))
            )
            if interrupted:  # a `mailer send` stopped before it finished: go on with it
                console.print(f"Going on with the interrupted send of campaign {campaign.id}.")
                window = dt.timedelta(seconds=settings.unknown_window_seconds)
                sweep(ctx, queue, lost_after=dt.timedelta(0), unknown_window=window)
            else:
                start(ctx, campaign.id, queue, at)
            bar.show(progress(ctx, campaign.id))
    state = progress(ctx, campaign.id)
    if state.status == "scheduled":
        console.print(f"Campaign {campaign.id} is scheduled for {at:%Y-%m-%d %H:%M} UTC.")
        return
    if follow and settings.broker_url:
        follow_campaign(ctx, campaign.id, edition.subject)
    # Inline, nothing else sends: a row still in flight was left by a sender that stopped.
    final = print_summary(ctx, campaign.id, in_flight=state.sending if inline else 0)
    if final.status == "unsettled" and (inline or follow):  # a script sees it too
        sys.exit(UNSETTLED_EXIT)


def _preflight(ctx: Context) -> None:
    """What can be checked before a campaign exists: the backend builds (credentials
    present, a DKIM key that signs) and the broker answers. Failing later would leave a
    campaign half started."""
    _ = ctx.backend  # built now (and kept), for its ConfigError
    if ctx.settings.broker_url:
        check_broker(ctx.settings.broker_url)


def _start_on_broker(ctx: Context, campaign_id: int, at: dt.datetime | None) -> None:
    """Start a campaign whose batches go to the workers. A broker lost meanwhile pauses it,
    with the reason, for `mailer campaigns resume` to hand out what is still queued."""
    from kombu.exceptions import OperationalError as BrokerError

    try:
        start(ctx, campaign_id, make_queue(ctx), at)
    except BrokerError as exc:
        reason = str(exc).rstrip(".")
        pause_with_error(ctx, campaign_id, f"the broker stopped answering ({reason})")
        raise MailerError(
            f"the broker stopped answering while campaign {campaign_id} was handed out "
            f"({reason}): it is paused; once the broker is back, "
            f"`mailer campaigns resume {campaign_id}` goes on"
        ) from exc


def _on_batch(show: Callable[[], None], every: float = 0.5) -> Callable[[BatchResult], None]:
    """A progress callback that says why readers went back to the queue, and redraws at
    most every ``every`` seconds (counting is a query)."""
    last = 0.0

    def on_batch(result: BatchResult) -> None:
        nonlocal last
        if result.requeued:
            console.print(
                f"[yellow]{result.requeued:,} back in the queue, tried again after a pause:[/] "
                f"{shown(result.error)}"
            )
        if time.monotonic() - last >= every:
            last = time.monotonic()
            show()

    return on_batch


def follow_campaign(
    ctx: Context,
    campaign_id: int,
    title: str,
    patience: float = FOLLOW_PATIENCE,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """A live bar until the campaign stops sending. It only watches: a database that
    stops answering is waited out for ``patience`` seconds, then it gives up in one line."""
    with CampaignBar(title, 0) as bar:
        lost_at: float | None = None
        while True:
            asked = time.monotonic()
            try:
                state = progress(ctx, campaign_id)
            except OperationalError as exc:
                lost_at = asked if lost_at is None else lost_at
                reason = str(exc.orig or exc).strip().partition("\n")[0]
                if asked - lost_at >= patience:
                    raise MailerError(
                        f"the database has not answered for {asked - lost_at:.0f} s ({reason}): "
                        f"stopped watching campaign {campaign_id}, whose send goes on; "
                        f"`mailer campaigns show {campaign_id} --follow` watches it again"
                    ) from exc
                if lost_at == asked:
                    console.print(
                        f"[yellow]The database does not answer[/] ({shown(reason)}): "
                        f"trying again for up to {patience:.0f} s."
                    )
                sleep(FOLLOW_INTERVAL)
                continue
            if lost_at is not None:
                console.print("The database answers again.")
                lost_at = None
            bar.show(state)
            if state.status != "sending":
                return
            counting = time.monotonic() - asked
            sleep(max(FOLLOW_INTERVAL, counting / FOLLOW_COST_SHARE))


def explain_unsettled(ctx: Context, campaign_id: int, p: Progress) -> None:
    """What an unsettled campaign means, and what the operator may do about it."""
    if p.status != "unsettled":
        return
    window = dt.timedelta(seconds=ctx.settings.unknown_window_seconds)
    later = (
        "the sweep sends them again"
        if ctx.settings.unknown_policy == "resend"
        else f"`mailer campaigns reconcile {campaign_id} --resend` sends them again"
    )
    console.print(
        f"[yellow]{p.unknown:,} readers' outcome is unknown[/] (their request got no answer): "
        f"the provider's events settle them as they come; after {window} without one, {later}."
    )


def print_summary(ctx: Context, campaign_id: int, in_flight: int = 0) -> Progress:
    """The campaign's counts (returned); ``in_flight``: rows a stopped sender left in flight."""
    p = progress(ctx, campaign_id)
    console.print(
        f"Campaign {campaign_id} ({shown(p.status)}): {plural(p.recipients, 'recipient')} — "
        f"sent {p.sent:,}, failed {p.failed:,}, unknown {p.unknown:,}, skipped {p.skipped:,}, "
        f"still queued {p.queued + p.sending:,}; backend {ctx.settings.backend}"
        + (f" ({ctx.settings.outbox_dir}/)" if ctx.settings.backend == "outbox" else "")
    )
    if in_flight:
        console.print(
            f"[yellow]{in_flight:,} were in flight when a sender stopped:[/] if it does not "
            f"answer, they become unknown after MAILER_STALE_CLAIM_SECONDS "
            f"({ctx.settings.stale_claim_seconds} s) and are settled from the provider's events."
        )
    explain_unsettled(ctx, campaign_id, p)
    if p.failed:
        with ctx.sessions() as session:
            refused = session.scalar(
                select(func.count()).where(
                    Delivery.campaign_id == campaign_id,
                    Delivery.status == DeliveryState.FAILED,
                    Delivery.error.startswith(POLICY_REFUSAL),
                )
            )
        if refused:
            console.print(
                f"[yellow]{refused:,} {POLICY_REFUSAL}[/] (SMTP 5.7.x: taken for spam, "
                "blocked); those readers stay on the list."
            )
    if p.last_error:
        console.print(f"[yellow]last error:[/] {shown(p.last_error)}")
    return p


def _parse_when(when: str, zone: str) -> dt.datetime:
    """``--at`` in UTC; a time already past is refused (a mistyped year would send now)."""
    try:
        moment = dt.datetime.fromisoformat(when)
    except ValueError as exc:
        raise MailerError(f"--at {when!r}: use an ISO time such as 2026-12-04T09:00") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=ZoneInfo(zone))
    moment = moment.astimezone(dt.UTC)
    if moment <= utcnow():
        raise MailerError(
            f"--at {when!r} is in the past ({moment:%Y-%m-%d %H:%M} UTC): give a later time, "
            "or leave --at out to send now"
        )
    return moment


def _wait_until(at: dt.datetime) -> None:
    with console.status("") as status:
        while (left := (at - utcnow()).total_seconds()) > 0:
            wait = dt.timedelta(seconds=int(left))
            status.update(f"Sending at {at:%Y-%m-%d %H:%M} UTC, in {wait} (Ctrl-C cancels)")
            time.sleep(min(left, 1.0))


def _has_campaign_already(post: Path, campaign: Campaign) -> str:
    """Why sending ``post`` does nothing: it has ``campaign``, which is not a draft."""
    if campaign.status == CampaignState.SCHEDULED and campaign.scheduled_at is not None:
        when = f"for {campaign.scheduled_at:%Y-%m-%d %H:%M} UTC"
    else:
        moment = campaign.finished_at or campaign.started_at or campaign.created_at
        when = f"{moment:%Y-%m-%d %H:%M} UTC"
    again = (
        f"; `mailer send {shown(post)} --again` sends it to the readers it did not reach."
        if campaign.status == CampaignState.CANCELLED
        else "."
    )
    return (
        f"{shown(post)} has campaign {campaign.id} already ({shown(campaign.status)}, {when}): "
        f"nothing to do; `mailer campaigns show {campaign.id}`{again}"
    )


def _dry_run(
    ctx: Context,
    post: Path,
    edition: Edition,
    *,
    again: bool,
    list_all: bool,
    lint_refusal: str,
) -> bool:
    """What `mailer send POST` (with ``again``) would do now, doing none of it: the same
    campaign it would find, the audience by the rule the send fills its ledger by, and
    what would refuse to start it. True when something would."""
    campaign = campaign_of(ctx, edition.slug)
    if campaign is not None and campaign.status == CampaignState.CANCELLED and again:
        campaign = None  # a new campaign, to the readers the cancelled one did not reach
    if (
        campaign is not None
        and campaign.status == CampaignState.SENDING
        and not ctx.settings.broker_url
    ):
        queued = progress(ctx, campaign.id).queued
        console.print(
            f"Would go on with the interrupted send of campaign {campaign.id}: {queued:,} "
            "still queued. Nothing was sent."
        )
        return False
    if campaign is not None and campaign.status != CampaignState.DRAFT:
        console.print(f"{_has_campaign_already(post, campaign)} Nothing was sent.")
        return False
    campaign_id = campaign.id if campaign else None
    with ctx.sessions() as session:
        readers = audience.count(session, edition.slug, campaign_id)
        query = (
            select(Subscriber.email)
            .where(audience.in_audience(edition.slug, campaign_id))
            .order_by(Subscriber.id)
        )
        addresses = list(session.scalars(query if list_all else query.limit(DRY_RUN_SHOWN)))
    batches = -(-readers // ctx.settings.batch_size)
    console.print(
        f"Would send “{shown(edition.subject)}” ({edition.size / 1000:.1f} KB) to "
        f"{plural(readers, 'confirmed subscriber')} in {plural(batches, 'batch')} "
        f"through {ctx.settings.backend}:"
    )
    for address in addresses:
        console.print(f"  {shown(address)}")
    if readers > len(addresses):
        console.print(f"  … and {readers - len(addresses):,} more (--list names them all)")
    refusals = ([lint_refusal] if lint_refusal else []) + _refusals(ctx)
    for refusal in refusals:
        console.print(f"[red]The send would be refused:[/] {shown(refusal)}")
    console.print("Nothing was sent.")
    return bool(refusals)


def _refusals(ctx: Context) -> list[str]:
    """Why `mailer send` would stop before starting a campaign, checked as it checks."""
    try:
        refuse_local_defaults(ctx.settings, campaign=True)
        _preflight(ctx)
    except MailerError as exc:
        return [str(exc)]
    return []


def _test_addresses(given: tuple[str, ...], settings: Settings) -> list[str]:
    """The --test-to addresses (repeated, or comma-separated) and the seed list, each
    once, in the order given."""
    addresses: dict[str, None] = {}
    for option in given:
        for raw in option.split(","):
            if raw.strip():
                addresses[normalize(raw)] = None
    if not addresses:
        raise MailerError("--test-to: give at least one address")
    addresses.update(dict.fromkeys(settings.seed_list))
    return list(addresses)


def _send_test(ctx: Context, edition: Edition, addresses: list[str]) -> None:
    """One test copy to each of ``addresses``, as one batch; no campaign, no ledger."""
    settings = ctx.settings
    key = f"test-{edition.slug}-{int(time.time())}"
    envelopes = tuple(
        Envelope(
            email=address,
            name="",
            key=f"{key}-{n}",
            unsubscribe_url=f"{settings.public_url}/unsubscribe/test",
            view_url=f"{settings.public_url}/archive/{edition.slug}",
        )
        for n, address in enumerate(addresses)
    )
    batch = Batch(
        subject=f"[Test] {edition.subject}",
        html=edition.html,
        text=edition.text,
        sender=Sender(settings.sender_email, settings.sender_name),
        envelopes=envelopes,
    )
    outcomes = {outcome.key: outcome for outcome in ctx.backend.send(batch)}
    sent, failed = [], []
    for envelope in envelopes:
        outcome = outcomes.get(envelope.key)
        if outcome is not None and outcome.status == "sent":
            sent.append(shown(envelope.email))
        else:
            reason = outcome.error if outcome else "the server said to try later"
            failed.append(f"{envelope.email} ({printable(reason)})")
    if sent:
        console.print(
            f"Sent a test copy to {', '.join(sent)} through {settings.backend}. "
            "No campaign was created."
        )
    if failed:
        raise MailerError(f"test copies not sent: {'; '.join(failed)}")
