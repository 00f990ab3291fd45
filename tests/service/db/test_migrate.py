import optuna
import sqlalchemy as sa

from paretoml.service.db.migrate import VERSION_TABLE, upgrade_database


def test_migrations_sit_beside_optunas_tables(storage_url):
    optuna.create_study(storage=storage_url, study_name="s")  # Optuna's schema first
    upgrade_database(storage_url)
    upgrade_database(storage_url)  # idempotent
    engine = sa.create_engine(storage_url)
    tables = set(sa.inspect(engine).get_table_names())
    assert {"paretoml_frontier_points", "paretoml_frontier_snapshots", "paretoml_jobs", VERSION_TABLE} <= tables
    assert {"studies", "trials", "alembic_version"} <= tables  # Optuna's, untouched
    with engine.connect() as conn:
        assert conn.execute(sa.text(f"SELECT version_num FROM {VERSION_TABLE}")).scalar() == "0002_jobs"
    engine.dispose()
    assert optuna.load_study(study_name="s", storage=storage_url).study_name == "s"
