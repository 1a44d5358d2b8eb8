"""Events keep a bounce's type (hard, soft, block), so the brake counts hard bounces exactly.

Until now the type decided what a bounce did to the reader and was then forgotten; the brake
counted readers a bounce had suppressed instead, which took in soft bounces past the limit
(from earlier campaigns too) and could not tell them apart. Bounces stored before this
revision have no type to recover for sure: those whose reader was suppressed as bounced are
marked hard (what the brake counted for them until now), the others stay without a type and
count as no hard bounce.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("events", sa.Column("bounce", sa.String(length=8), nullable=True))
    op.execute(
        "UPDATE events SET bounce = 'hard' WHERE kind = 'bounced' AND EXISTS ("
        "SELECT 1 FROM deliveries d JOIN subscribers s ON s.id = d.subscriber_id "
        "WHERE d.id = events.delivery_id AND s.status = 'bounced')"
    )


def downgrade() -> None:
    with op.batch_alter_table("events") as batch:
        batch.drop_column("bounce")
