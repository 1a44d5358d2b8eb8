"""The reputation brake: the campaigns it stopped, and those let go on past it.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

from mailer.store.db import Id, UTCDateTime

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "campaign_brakes",
        sa.Column("campaign_id", Id, nullable=False),
        sa.Column("tripped_at", UTCDateTime(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("released_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("campaign_id", name="pk_campaign_brakes"),
    )


def downgrade() -> None:
    op.drop_table("campaign_brakes")
