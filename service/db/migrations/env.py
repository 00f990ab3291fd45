"""Alembic environment: online migrations against the URL set by ``migrate.py``."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine, pool

from paretoml.service.db.migrate import VERSION_TABLE
from paretoml.service.db.models import Base

config = context.config
url = config.get_main_option("sqlalchemy.url")
engine = create_engine(url, poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection, target_metadata=Base.metadata, version_table=VERSION_TABLE,
                      render_as_batch=connection.dialect.name == "sqlite")
    with context.begin_transaction():
        context.run_migrations()
engine.dispose()
