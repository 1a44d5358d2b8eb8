"""Subscribers, the suppression list and subscriber activity.

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.db import Id, UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "subscribers",
        sa.Column("id", Id, primary_key=True),
        sa.Column("email", sa.String(320), nullable=False),
        sa.Column("email_hash", sa.String(64), nullable=False),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("tags", sa.JSON(), nullable=False),
        sa.Column("source", sa.String(200), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("confirmed_at", UTCDateTime(), nullable=True),
        sa.Column("unsubscribed_at", UTCDateTime(), nullable=True),
        sa.Column("confirmation_sent_at", UTCDateTime(), nullable=True),
        sa.Column("consent_at", UTCDateTime(), nullable=True),
        sa.Column("consent_ip", sa.String(45), nullable=False),
        sa.Column("consent_user_agent", sa.String(400), nullable=False),
        sa.Column("consent_source", sa.String(200), nullable=False),
        sa.Column("consent_text", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_subscribers"),
        sa.UniqueConstraint("email_hash", name="uq_subscribers_email_hash"),
        # Never reuse an id: old unsubscribe links name subscribers by id.
        sqlite_autoincrement=True,
    )
    op.create_index("ix_subscribers_status", "subscribers", ["status"])
    op.create_table(
        "suppressions",
        sa.Column("email_hash", sa.String(64), nullable=False),
        sa.Column("reason", sa.String(16), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("email_hash", name="pk_suppressions"),
    )
    op.create_table(
        "activity",
        sa.Column("id", Id, nullable=False),
        sa.Column("subscriber_id", Id, nullable=True),
        sa.Column("kind", sa.String(40), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_activity"),
        sa.ForeignKeyConstraint(
            ["subscriber_id"],
            ["subscribers.id"],
            name="fk_activity_subscriber_id_subscribers",
            ondelete="CASCADE",
        ),
    )
    op.create_index("ix_activity_subscriber_id", "activity", ["subscriber_id"])


def downgrade() -> None:
    op.drop_table("activity")
    op.drop_table("suppressions")
    op.drop_table("subscribers")
