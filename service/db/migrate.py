"""Bring a database's ParetoML tables to the newest migration (Alembic, run in-process).

Alembic keeps its revision in ``paretoml_alembic_version``, not the default
``alembic_version``, which Optuna's own migrations already use in the same database.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

VERSION_TABLE = "paretoml_alembic_version"
MIGRATIONS = Path(__file__).resolve().parent / "migrations"


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade_database(url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(url), revision)
