"""Tracking: each campaign's link table, one table of events, soft-bounce counts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.db import Id, UTCDateTime

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

# SQLite rebuilds the table to change it: keep its ids never reused.
_KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}


def upgrade() -> None:
    with op.batch_alter_table("campaigns", table_kwargs=_KEEP_AUTOINCREMENT) as batch:
        batch.add_column(
            sa.Column("tracking", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    with op.batch_alter_table("subscribers") as batch:
        batch.add_column(
            sa.Column("soft_bounces", sa.Integer(), nullable=False, server_default="0")
        )
    op.create_table(
        "campaign_links",
        sa.Column("campaign_id", Id, nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "position", name="pk_campaign_links"),
        sa.ForeignKeyConstraint(
            ["campaign_id"],
            ["campaigns.id"],
            name="fk_campaign_links_campaign_id_campaigns",
            ondelete="CASCADE",
        ),
    )
    op.create_table(
        "events",
        sa.Column("id", Id, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("campaign_id", Id, nullable=True),
        sa.Column("delivery_id", Id, nullable=True),
        sa.Column("position", sa.Integer(), nullable=True),
        sa.Column("machine", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("provider_event_id", sa.String(100), nullable=True),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_events"),
        sa.UniqueConstraint("provider_event_id", name="uq_events_provider_event_id"),
    )
    op.create_index("ix_events_campaign_id_kind", "events", ["campaign_id", "kind"])
    op.create_index("ix_events_delivery_id", "events", ["delivery_id"])


def downgrade() -> None:
    op.drop_table("events")
    op.drop_table("campaign_links")
    with op.batch_alter_table("subscribers") as batch:
        batch.drop_column("soft_bounces")
    with op.batch_alter_table("campaigns", table_kwargs=_KEEP_AUTOINCREMENT) as batch:
        batch.drop_column("tracking")
