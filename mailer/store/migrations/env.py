"""Alembic environment: runs on the engine the caller hands over (``mailer.store.db.upgrade``)."""

from alembic import context

import mailer.sending.brake
import mailer.store.ledger
import mailer.tracking.events
import mailer.tracking.links  # noqa: F401
import subscribers.models  # noqa: F401
from mailer.store.db import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=engine.dialect.name == "sqlite",  # SQLite alters tables by copying
    )
    with context.begin_transaction():
        context.run_migrations()
