"""Ledgers filled a chunk at a time; a partial index of deliveries still open.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

# SQLite rebuilds the table to change it: keep its ids never reused.
_KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}

_OPEN = sa.text("status IN ('queued', 'sending')")


def upgrade() -> None:
    with op.batch_alter_table("campaigns", table_kwargs=_KEEP_AUTOINCREMENT) as batch:
        batch.add_column(
            sa.Column("filled", sa.Boolean(), nullable=False, server_default=sa.true())
        )
    op.create_index(
        "ix_deliveries_open",
        "deliveries",
        ["campaign_id"],
        sqlite_where=_OPEN,
        postgresql_where=_OPEN,
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_open", "deliveries")
    with op.batch_alter_table("campaigns", table_kwargs=_KEEP_AUTOINCREMENT) as batch:
        batch.drop_column("filled")
