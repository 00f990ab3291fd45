"""Every process that runs trials works within its thread budget: the in-process executor
(its stated default, or the spec's), and each real Ray worker (its ``num_cpus`` share, or
the spec's), whatever the environment Ray was started from says."""

from __future__ import annotations

import os
import shutil
import tempfile

import optuna
import pytest
import ray
import torch
from optuna.trial import TrialState

from paretoml.objectives.threads import DEFAULT_THREADS
from paretoml.service.spec import parse_spec
from paretoml.service.executors import create_executor
from paretoml.service.executors.inprocess import InProcessExecutor
from paretoml.service.executors.ray_pool import RayPoolExecutor
from paretoml.search_space.trial_attrs import WORKER_ATTR
from paretoml.service.runner import StudyRunner


def spec(n_trials: int = 3, **threads: int) -> dict:
    return {
        "task": "synthetic",
        "knobs": [{"kind": "bitwidth", "choices": [2, 4, 8]}],
        "objectives": [{"name": "fidelity"}, {"name": "model_bytes"}],
        "sampler": {"name": "random"},
        "measure": {"latency_repeats": 1, "latency_warmup": 0},
        "n_trials": n_trials,
        "threads": threads,
    }


def trial_threads(executor, document: dict) -> list[int]:
    """torch's threads while each trial ran, as the trials stored them."""
    model = parse_spec(document)
    with executor(model) as pool:
        study = StudyRunner.create(model, optuna.storages.InMemoryStorage(), "s", pool).run()
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * model.n_trials
    return [t.user_attrs[WORKER_ATTR]["threads"] for t in study.trials]


def test_in_process_trials_run_on_the_default_budget_and_the_process_gets_its_threads_back():
    torch.set_num_threads(2)
    assert trial_threads(InProcessExecutor, spec()) == [DEFAULT_THREADS] * 3
    assert torch.get_num_threads() == 2


def test_the_spec_and_the_caller_override_the_in_process_budget():
    torch.set_num_threads(1)
    assert trial_threads(InProcessExecutor, spec(driver=2)) == [2] * 3
    assert trial_threads(lambda s: create_executor("inprocess", s, threads=3), spec(driver=2)) == [3] * 3


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray started from an environment that asks for 3 OpenMP threads: Ray hands
    that on to its workers (it sets OMP_NUM_THREADS to a worker's share only when unset)."""
    path = tempfile.mkdtemp(prefix="pml-thr-")
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "3"
    try:
        ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR", _temp_dir=path)
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS")
        else:
            os.environ["OMP_NUM_THREADS"] = before
    yield
    ray.shutdown()
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.slow
@pytest.mark.parametrize(("num_cpus", "workers", "threads", "expected"), [
    (1, 2, {}, 1),            # each worker its share of one CPU
    (2, 1, {}, 2),            # a share of two CPUs: two threads
    (2, 1, {"worker": 1}, 1),  # the spec overrides the share
])
def test_a_ray_worker_computes_on_the_threads_of_its_share(local_ray, num_cpus, workers, threads, expected):
    got = trial_threads(lambda s: RayPoolExecutor(s, workers=workers, num_cpus=num_cpus), spec(4, **threads))
    assert got == [expected] * 4
