"""Bring a database's ParetoML tables to the newest migration (Alembic, run in-process).

Alembic keeps its revision in ``paretoml_alembic_version``, not the default
``alembic_version``, which Optuna's own migrations already use in the same database.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import create_engine, text
from sqlalchemy.pool import NullPool

VERSION_TABLE = "paretoml_alembic_version"
#: PostgreSQL advisory-lock key under which tables are created and migrated ("paretoml")
SCHEMA_LOCK_KEY = 0x7061726574_6D6C
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@contextmanager
def schema_lock(url: str) -> Iterator[None]:
    """Hold the database's schema lock while creating or migrating tables.

    Two servers starting at once on a new PostgreSQL database would otherwise both create
    Optuna's and our tables, and the second fails on PostgreSQL's catalog (duplicate
    ``pg_type`` rows). On PostgreSQL this is a session-level advisory lock on its own
    connection; other databases are used from one host and need none.
    """
    if not url.startswith("postgresql"):
        yield
        return
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            connection.commit()  # the lock is the session's; no transaction stays open meanwhile
            try:
                yield
            finally:
                connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": SCHEMA_LOCK_KEY})
                connection.commit()
    finally:
        engine.dispose()


def upgrade_database(url: str, revision: str = "head") -> None:
    with schema_lock(url):
        command.upgrade(alembic_config(url), revision)
