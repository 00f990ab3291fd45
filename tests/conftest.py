"""Shared fixtures: one trained-weights cache per test session, real tasks and models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def _session_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tasks train once per session into a private cache (subprocesses inherit it)."""
    path = Path(os.environ.get("PARETOML_TEST_CACHE") or tmp_path_factory.mktemp("paretoml-cache"))
    os.environ["PARETOML_CACHE_DIR"] = str(path)
    return path


@pytest.fixture(scope="session")
def postgres_server():
    """One real PostgreSQL server for the session; each test gets its own database.

    Its directory sits directly under the system temp dir: pytest's own temp dirs are
    private to root, and as root the server runs as the ``postgres`` user.
    """
    import shutil
    import sys
    import tempfile

    sys.path.insert(0, str(Path(__file__).parent))
    from pg import PostgresServer

    root = Path(tempfile.mkdtemp(prefix="paretoml-pg-"))
    server = PostgresServer(root).start()
    yield server
    server.stop()
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The storage and runner tests run against both databases."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'study.db'}"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture(scope="session")
def digits_evaluator():
    from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator
    from paretoml.objectives.measure import LatencySettings
    from paretoml.objectives.tasks.registry import create_task

    from paretoml.search_space.deploy_mode import DeployMode

    torch.manual_seed(0)
    # emulating: the tests using it put every bitwidth on every layer (the CPU has no
    # low-bit conv kernel); runtime mode has tests of its own (tests/objectives/deploy)
    settings = MeasureSettings(latency=LatencySettings(warmup=2, repeats=5), deploy=DeployMode(emulate=True))
    return TrialEvaluator(create_task("digits-cnn"), settings)


@pytest.fixture(scope="session")
def merge_evaluator():
    from paretoml.objectives.evaluate import MeasureSettings, TrialEvaluator
    from paretoml.objectives.measure import LatencySettings
    from paretoml.objectives.tasks.registry import create_task

    settings = MeasureSettings(latency=LatencySettings(warmup=1, repeats=3))
    return TrialEvaluator(create_task("digits-merge"), settings)
