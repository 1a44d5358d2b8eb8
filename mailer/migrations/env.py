"""Alembic environment: runs on the engine the caller hands over (``mailer.db.upgrade``)."""

from alembic import context

import mailer.campaign
import mailer.events
import mailer.tracking  # noqa: F401
import subscribers.models  # noqa: F401
from mailer.db import Base

engine = context.config.attributes["engine"]
with engine.begin() as connection:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        render_as_batch=engine.dialect.name == "sqlite",  # SQLite alters tables by copying
    )
    with context.begin_transaction():
        context.run_migrations()
