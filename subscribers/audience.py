"""Who gets a post: one rule, in one place, for the fill, the claim and the dry run.

A subscriber is in a post's audience when they are confirmed, their address is not
on the suppression list, and no other campaign of the same post (a cancelled one, before
``mailer send --again``) reached them or may have: none of its rows for them is sent,
in flight or unknown. The fill queues the audience into the ledger, the claim asks
again about each batch's readers (one may have left the list meanwhile), and the dry
run counts it: all three build their statements from ``in_audience``.
"""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import (
    BigInteger,
    ColumnElement,
    Integer,
    and_,
    bindparam,
    case,
    exists,
    func,
    insert,
    literal,
    literal_column,
    select,
)
from sqlalchemy.engine import Connection, CursorResult
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import Insert, ReturningUpdate

from mailer.store.dialect import among, joins_returning
from mailer.store.ledger import Campaign, Delivery, DeliveryState
from subscribers.models import Status, Subscriber, Suppression

__all__ = ["REACHED", "add_chunk", "claimed_readers", "count", "in_audience"]

_subscribers = Subscriber.__table__
_suppressions = Suppression.__table__
_deliveries = Delivery.__table__
_campaigns = Campaign.__table__

# The outcomes that mean a reader has the edition, or may have it.
REACHED = (DeliveryState.SENT, DeliveryState.SENDING, DeliveryState.UNKNOWN)


def in_audience(slug: object, campaign_id: object = None) -> ColumnElement[bool]:
    """The rule, as a condition on the subscribers table, for the post ``slug`` (a value
    or a bound parameter): readers whom a campaign of the post other than
    ``campaign_id`` reached are left out."""
    earlier, of_post = _deliveries.alias("e"), _campaigns.alias("c")
    reached = (
        select(literal(1))
        .select_from(earlier.join(of_post, of_post.c.id == earlier.c.campaign_id))
        .where(
            of_post.c.slug == slug,
            earlier.c.subscriber_id == _subscribers.c.id,
            earlier.c.status.in_(REACHED),
        )
    )
    if campaign_id is not None:
        reached = reached.where(of_post.c.id != campaign_id)
    suppressed = exists().where(_suppressions.c.email_hash == _subscribers.c.email_hash)
    return and_(_subscribers.c.status == Status.CONFIRMED, ~suppressed, ~reached.exists())


def _fill_chunk() -> Insert:
    """The next chunk of a campaign's audience into its ledger, in one INSERT … SELECT (no
    Python loop over subscribers): after the highest subscriber id it holds (read from the
    end of the ledger's unique index), in id order, numbered into batches from
    ``next_batch``. Under the campaign's row lock, two fillers cannot overlap, and an
    interrupted fill goes on where it stopped."""
    campaign_id = bindparam("campaign_id", type_=BigInteger)
    own = _deliveries.alias("own")
    last_reader = (
        select(func.coalesce(func.max(own.c.subscriber_id), 0))
        .where(own.c.campaign_id == campaign_id)
        .scalar_subquery()
    )
    chunk = (
        select(_subscribers.c.id)
        .where(in_audience(bindparam("slug"), campaign_id), _subscribers.c.id > last_reader)
        .order_by(_subscribers.c.id)
        .limit(bindparam("chunk", type_=Integer))
        .subquery("t")
    )
    position = func.row_number().over(order_by=chunk.c.id) - 1
    # Integer division on both databases (SQLAlchemy's // would add a FLOOR SQLite lacks).
    batch = bindparam("next_batch", type_=Integer) + position.self_group().op("/")(
        bindparam("batch_size", type_=Integer)
    )
    return insert(_deliveries).from_select(
        ["campaign_id", "subscriber_id", "batch", "status", "attempts", "provider_id", "error"],
        select(
            campaign_id,
            chunk.c.id,
            batch,
            literal_column(f"'{DeliveryState.QUEUED}'"),
            literal_column("0"),
            literal_column("''"),
            literal_column("''"),
        ),
    )


_FILL_CHUNK = _fill_chunk()


def add_chunk(session: Session, campaign: Campaign, size: int) -> int:
    """Queue up to ``size`` more readers of ``campaign``'s audience, ``campaign.batch_size``
    to a batch, numbered after its ``batches``; returns how many it queued. Call it with the
    campaign row locked."""
    params = {
        "campaign_id": campaign.id,
        "slug": campaign.slug,
        "batch_size": campaign.batch_size,
        "next_batch": campaign.batches,
        "chunk": size,
    }
    # Session.execute's stubs say Result, but an INSERT's is a CursorResult, with a rowcount
    # (SQLAlchemy's own docs say so; sqlalchemy/sqlalchemy#9185), kept only when asked for:
    # else -1 on PostgreSQL, which read as a short chunk would end the fill after its first.
    options = {"preserve_rowcount": True}
    result = session.execute(_FILL_CHUNK, params, execution_options=options)
    return cast(CursorResult[Any], result).rowcount


def claimed_readers(
    connection: Connection, claim: ReturningUpdate, slug: str, campaign_id: int
) -> list[tuple[int, int, int, tuple[str, str] | None]]:
    """Run ``claim`` (an UPDATE of ``campaign_id``'s ledger rows RETURNING their id,
    subscriber id and attempts) and give each row it took, by id, with its reader's address
    and name, or None when the reader is no longer in the audience. On PostgreSQL in
    one statement; elsewhere the readers are looked up by their own key after the claim
    (joining the ledger again would read every claimed row a second time)."""
    if joins_returning(connection):
        claimed = claim.cte("claimed")
        present = in_audience(slug, campaign_id)
        query = (
            select(
                claimed.c.id,
                claimed.c.subscriber_id,
                claimed.c.attempts,
                case((present, _subscribers.c.email)),
                case((present, _subscribers.c.name)),
            )
            .select_from(
                claimed.outerjoin(_subscribers, _subscribers.c.id == claimed.c.subscriber_id)
            )
            .order_by(claimed.c.id)
        )
        return [
            (delivery_id, subscriber_id, attempts, None if email is None else (email, name))
            for delivery_id, subscriber_id, attempts, email, name in connection.execute(query)
        ]
    taken = sorted(connection.execute(claim).all())
    ids = [subscriber_id for _, subscriber_id, _ in taken]
    rows = connection.execute(
        select(_subscribers.c.id, _subscribers.c.email, _subscribers.c.name).where(
            among(connection, _subscribers.c.id, ids), in_audience(slug, campaign_id)
        )
    )
    found = {subscriber_id: (email, name) for subscriber_id, email, name in rows}
    return [
        (i, subscriber_id, tries, found.get(subscriber_id)) for i, subscriber_id, tries in taken
    ]


def count(session: Session, slug: str, campaign_id: int | None = None) -> int:
    """How many readers a campaign of ``slug`` would be sent to now (``campaign_id``: one
    that exists already, whose own rows do not count as reaching anyone)."""
    query = select(func.count()).select_from(_subscribers).where(in_audience(slug, campaign_id))
    return session.scalar(query) or 0
