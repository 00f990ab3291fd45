"""Engine and session factory for the service's tables, and the SQLite tuning that every
engine on a SQLite file gets (Optuna's as well as ours)."""

from __future__ import annotations

import sqlite3
from functools import lru_cache
from typing import Any

import sqlalchemy
from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker

from paretoml.service.db.migrate import upgrade_database


def tune_sqlite(engine: Engine) -> None:
    """Write-ahead log, and a 30 s wait for locks on every connection.

    With WAL a commit is one append and readers never block the writer;
    ``synchronous=NORMAL`` with WAL keeps every committed transaction through a crash or
    kill of the process (only an OS crash or power cut can lose the last commits). WAL is
    a property of the file: it is switched on by the first connection that can take the
    lock, and a connection that cannot (others busy) just waits on the one that did.
    """

    @sqlalchemy.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")  # first: the statements below may wait for a lock
        if cursor.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
            try:
                cursor.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError:  # busy: a later connection switches it
                pass
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    engine.dispose()  # connections opened before the listener reconnect with the pragmas
    if engine.url.database not in (None, "", ":memory:"):
        with engine.connect() as connection:  # switch the file to WAL now, before any load
            connection.exec_driver_sql("SELECT 1")


@lru_cache(maxsize=8)
def engine_for(url: str) -> Engine:
    """One migrated engine per database URL and process."""
    kwargs = {"pool_pre_ping": True} if not url.startswith("sqlite") else {"connect_args": {"timeout": 30}}
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        tune_sqlite(engine)  # WAL before the migrations and before anyone else connects
    upgrade_database(url)
    return engine


def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(engine_for(url), expire_on_commit=False)
