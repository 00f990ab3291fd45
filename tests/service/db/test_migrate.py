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


OPEN_BOTH = """
import sys
from paretoml.service.db.session import engine_for
from paretoml.service.storage import open_storage
open_storage(sys.argv[1])   # Optuna's tables
engine_for(sys.argv[1])     # ours (Alembic)
"""


def test_processes_starting_at_once_on_a_new_postgres_database_all_open_it(postgres_server):
    # two servers started together on a fresh database: without the schema lock one of them
    # dies in CREATE TABLE (duplicate key in pg_type): 4 at once hit it at the first try here
    import subprocess
    import sys

    for _ in range(3):
        url = postgres_server.create_database()
        procs = [subprocess.Popen([sys.executable, "-c", OPEN_BOTH, url], stderr=subprocess.PIPE, text=True)
                 for _ in range(4)]
        for proc in procs:
            _, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err.strip().splitlines()[-1]
        engine = sa.create_engine(url)
        assert {"studies", "trials", "paretoml_jobs"} <= set(sa.inspect(engine).get_table_names())
        engine.dispose()
