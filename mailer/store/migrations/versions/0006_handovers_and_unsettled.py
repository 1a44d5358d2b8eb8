"""When each batch was last handed to the queue; unknown rows indexed; ``unsettled`` campaigns.

A queued batch whose broker message was lost is found by its hand-over time, so the
sweep hands it out again within minutes instead of after a campaign-wide quiet. The
batches that exist already are noted as handed over now. Unknown rows get a partial
index: every sweep and every finish looks for them. A campaign that was marked sent
while some of its readers' outcomes were unknown is ``unsettled``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

import sqlalchemy as sa
from alembic import op

from mailer.clock import utcnow
from mailer.store.db import Id, UTCDateTime

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

_UNKNOWN = sa.text("status = 'unknown'")
_HAS_UNKNOWN = (
    "EXISTS (SELECT 1 FROM deliveries d "
    "WHERE d.campaign_id = campaigns.id AND d.status = 'unknown')"
)


def upgrade() -> None:
    op.create_table(
        "handovers",
        sa.Column("campaign_id", Id, nullable=False),
        sa.Column("batch", sa.Integer(), nullable=False),
        sa.Column("handed_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("campaign_id", "batch", name="pk_handovers"),
    )
    op.execute(
        sa.text(
            "INSERT INTO handovers (campaign_id, batch, handed_at) "
            "SELECT campaign_id, batch, :now FROM deliveries GROUP BY campaign_id, batch"
        ).bindparams(sa.bindparam("now", utcnow(), type_=UTCDateTime()))
    )
    op.create_index(
        "ix_deliveries_unknown",
        "deliveries",
        ["campaign_id"],
        sqlite_where=_UNKNOWN,
        postgresql_where=_UNKNOWN,
    )
    op.execute(
        f"UPDATE campaigns SET status = 'unsettled' WHERE status = 'sent' AND {_HAS_UNKNOWN}"
    )


def downgrade() -> None:
    op.execute("UPDATE campaigns SET status = 'sent' WHERE status = 'unsettled'")
    op.drop_index("ix_deliveries_unknown", "deliveries")
    op.drop_table("handovers")
