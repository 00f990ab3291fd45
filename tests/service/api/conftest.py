"""An app per test on a fresh SQLite file; a real Ray runtime for the tests that run jobs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray
from fastapi.testclient import TestClient

from paretoml.service.api import create_app
from paretoml.service.settings import Settings

TOKEN = "s3cret-token"


def synthetic_spec(**changes: Any) -> dict[str, Any]:
    """A small real study: the synthetic task's MLP, bits and pruning, two objectives."""
    spec: dict[str, Any] = {
        "task": "synthetic",
        "knobs": [{"kind": "bitwidth", "choices": [2, 4, 8]}, {"kind": "prune", "high": 0.8, "step": 0.1}],
        "objectives": [{"name": "fidelity"}, {"name": "model_bytes"}],
        "sampler": {"name": "tpe", "options": {"n_startup_trials": 4}},
        "measure": {"latency_repeats": 2, "latency_warmup": 0},
        "n_trials": 10,
    }
    spec.update(changes)
    return spec


def make_client(tmp_path: Path, **settings: Any) -> TestClient:
    values: dict[str, Any] = {"database_url": f"sqlite:///{tmp_path / 'api.db'}", "study_concurrency": 0,
                              "job_heartbeat_s": 0.3, "worker_cpus": 0.5}
    values.update(settings)
    return TestClient(create_app(Settings(**values)), raise_server_exceptions=False)


@pytest.fixture
def client(tmp_path: Path) -> Iterator[TestClient]:
    """An API that accepts jobs and runs none: the contract without the runners."""
    with make_client(tmp_path) as c:
        yield c


@pytest.fixture(scope="module")
def ray_runtime() -> Iterator[None]:
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


@pytest.fixture
def running_client(tmp_path: Path, ray_runtime: None) -> Iterator[TestClient]:
    """An API whose scheduler runs one study at a time on the Ray pool."""
    with make_client(tmp_path, study_concurrency=1) as c:
        yield c


def wait_for(client: TestClient, study_id: str, statuses: set[str], timeout: float = 120) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        body = client.get(f"/api/v1/studies/{study_id}").json()
        if body["status"] in statuses:
            return body
        time.sleep(0.2)
    raise AssertionError(f"study {study_id} never reached {statuses}; last: {body['status']} {body['progress']}")
