"""Workers sharing GPUs: the share each reserves, and Ray placing them on (fake) GPUs.

Ray lets a CPU machine declare GPUs (``ray.init(num_gpus=2)``); it then places fractional
workers on them and sets their ``CUDA_VISIBLE_DEVICES`` exactly as on a GPU machine, which
is the logic under test. The trials themselves run on the CPU.
"""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from paretoml.search_space.trial_attrs import WORKER_ATTR
from paretoml.service.executors.gpu_share import (
    GpuShareError,
    capacity,
    gpu_share,
    parse_gpu_request,
)
from paretoml.service.executors.ray_pool import RayPoolExecutor
from paretoml.service.runner import StudyRunner
from paretoml.service.spec import parse_spec
from paretoml.service.storage import open_durable_storage


@pytest.fixture()
def ray_dir():
    """A short temp dir for the test's own Ray runtime (socket paths are limited to 107 bytes)."""
    import shutil
    import tempfile

    path = tempfile.mkdtemp(prefix="pml-gpu-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.mark.parametrize(("workers", "gpus", "share"), [
    (1, 1, 1.0), (2, 1, 0.5), (4, 1, 0.25), (8, 1, 0.125), (3, 1, 1 / 3),
    (8, 2, 0.25), (3, 2, 0.5), (1, 4, 1.0), (4, 4, 1.0), (5, 4, 0.5),
])
def test_auto_spreads_the_workers_evenly_over_the_gpus(workers, gpus, share):
    assert gpu_share(workers, "auto", gpus, uses_cuda=True) == pytest.approx(share)
    # and what it asks for fits: Ray can place every worker
    assert capacity(share, gpus) >= workers


@pytest.mark.parametrize(("workers", "sharers", "gpus", "share"), [(2, 4, 1, 0.125), (2, 3, 2, 1 / 3), (1, 2, 4, 1.0)])
def test_auto_splits_the_gpus_between_pools_that_run_at_once(workers, sharers, gpus, share):
    """A server running several studies at once: every pool's workers must fit together,
    or all but the first pool wait for GPUs it holds until it ends."""
    assert gpu_share(workers, "auto", gpus, uses_cuda=True, sharers=sharers) == pytest.approx(share)
    assert capacity(share, gpus) >= workers * sharers


def test_auto_reserves_no_gpu_for_a_cpu_study_and_fails_without_gpus():
    assert gpu_share(4, "auto", 2, uses_cuda=False) == 0.0
    with pytest.raises(GpuShareError, match="has no GPU"):
        gpu_share(2, "auto", 0, uses_cuda=True)


def test_an_explicit_share_that_cannot_be_placed_is_refused_before_anything_starts():
    assert gpu_share(2, 0.5, 1, uses_cuda=True) == 0.5
    with pytest.raises(GpuShareError, match="at most 2"):
        gpu_share(3, 0.5, 1, uses_cuda=True)
    with pytest.raises(GpuShareError, match="at most 3"):  # 0.3 packs 3 on a GPU, not 3.33
        gpu_share(4, 0.3, 1, uses_cuda=True)
    with pytest.raises(GpuShareError, match="at most 1"):
        gpu_share(2, 2, 3, uses_cuda=True)
    with pytest.raises(GpuShareError, match="whole GPUs"):
        gpu_share(1, 1.5, 4, uses_cuda=True)
    with pytest.raises(GpuShareError, match="reserve no GPU"):
        gpu_share(1, 0, 1, uses_cuda=True)
    assert gpu_share(3, 0, 0, uses_cuda=False) == 0.0
    # an explicit share counts the pools that run at once too
    assert gpu_share(2, 0.25, 1, uses_cuda=True, sharers=2) == 0.25
    with pytest.raises(GpuShareError, match=r"4 workers \(2 pools of 2 at once\).*at most 2"):
        gpu_share(2, 0.5, 1, uses_cuda=True, sharers=2)


def test_gpu_requests_are_parsed_with_clear_errors():
    assert parse_gpu_request("auto") == "auto" and parse_gpu_request(" AUTO ") == "auto"
    assert parse_gpu_request("0.25") == 0.25
    for bad in ("-1", "half", "nan", "inf"):
        with pytest.raises(ValueError, match="GPU"):
            parse_gpu_request(bad)


def _spec(device: str, n_trials: int = 8) -> dict:
    return {
        "task": "synthetic", "task_options": {"busy_ms": 5},
        "knobs": [{"kind": "bitwidth", "choices": [2, 4, 8]}],
        "objectives": [{"name": "fidelity"}, {"name": "model_bytes"}],
        "sampler": {"name": "random"}, "measure": {"device": device, "latency_repeats": 1, "latency_warmup": 0},
        "n_trials": n_trials, "seed": 0,
    }


@pytest.mark.slow
def test_fractional_workers_are_placed_two_to_a_gpu_and_run_trials(tmp_path, ray_dir):
    """4 workers on a runtime with 2 (declared) GPUs, 'auto': half a GPU each, two per GPU;
    every trial records the GPU its worker had."""
    spec = parse_spec(_spec("auto"))
    url = f"sqlite:///{tmp_path / 'study.db'}"
    with RayPoolExecutor(spec, workers=4, num_cpus=0.5, num_gpus="auto", ray_gpus=2,
                         temp_dir=ray_dir) as pool:
        runner = StudyRunner.create(spec, open_durable_storage(url), "s", pool)
        assert pool.share == 0.5
        import ray

        placed = ray.get([actor.placement.remote() for actor in pool._actors])
        per_gpu: dict[str, int] = {}
        for info in placed:
            assert len(info.gpus) == 1  # half a GPU is on one GPU, never split over two
            per_gpu[info.gpus[0]] = per_gpu.get(info.gpus[0], 0) + 1
        assert per_gpu == {"0": 2, "1": 2}
        runner.run()
    study = optuna.load_study(study_name="s", storage=url)
    assert [t.state for t in study.trials].count(TrialState.COMPLETE) == 8
    assert {tuple(t.user_attrs[WORKER_ATTR]["gpus"]) for t in study.trials} <= {("0",), ("1",)}


@pytest.mark.slow
def test_a_pool_that_does_not_fit_fails_at_start_and_leaves_ray_clean(ray_dir):
    spec = parse_spec(_spec("cuda"))
    pool = RayPoolExecutor(spec, workers=3, num_cpus=0.5, num_gpus=0.5, ray_gpus=1, temp_dir=ray_dir)
    with pytest.raises(GpuShareError, match="3 workers reserving 0.5 GPU each do not fit"):
        pool.start()
    assert pool._actors == []  # nothing was placed, so nothing waits forever for a GPU
    pool.close()
