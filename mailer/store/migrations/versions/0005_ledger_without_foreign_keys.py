"""The ledger without foreign keys, and its index of open rows by batch too.

The foreign keys cost more than half of filling the ledger: the fill reads the
campaign and the subscribers in the very statement that inserts the rows, so
they checked nothing it did not know, yet each row paid two lookups and a lock
on its subscriber. Deleting a subscriber now deletes their deliveries in the
same transaction (``subscribers.store``), as the cascade did.

The open-rows index gains the batch: before the planner has statistics of a new
campaign's rows, it took that index for the claim of one batch, and read every
open row of the campaign to find the batch's thousand.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# SQLite rebuilds the table to change it: keep its ids never reused.
_KEEP_AUTOINCREMENT = {"sqlite_autoincrement": True}
_KEYS = {
    "fk_deliveries_campaign_id_campaigns": ("campaigns", "campaign_id"),
    "fk_deliveries_subscriber_id_subscribers": ("subscribers", "subscriber_id"),
}
_OPEN = sa.text("status IN ('queued', 'sending')")


def _open_index(columns: list[str]) -> None:
    op.drop_index("ix_deliveries_open", "deliveries")
    op.create_index(
        "ix_deliveries_open", "deliveries", columns, sqlite_where=_OPEN, postgresql_where=_OPEN
    )


def upgrade() -> None:
    with op.batch_alter_table("deliveries", table_kwargs=_KEEP_AUTOINCREMENT) as batch:
        for name in _KEYS:
            batch.drop_constraint(name, type_="foreignkey")
    _open_index(["campaign_id", "batch"])


def downgrade() -> None:
    _open_index(["campaign_id"])
    with op.batch_alter_table("deliveries", table_kwargs=_KEEP_AUTOINCREMENT) as batch:
        for name, (table, column) in _KEYS.items():
            batch.create_foreign_key(name, table, [column], ["id"], ondelete="CASCADE")
