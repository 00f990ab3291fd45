"""StudyRunner on a real local Ray pool, against SQLite and PostgreSQL."""

from __future__ import annotations

import optuna
import pytest
import ray
from optuna.trial import TrialState

from paretoml.search_space.trial_attrs import ERROR_ATTR, PROVENANCE_ATTR, SPEC_ATTR, WORKER_ATTR
from paretoml.service.executors import create_executor
from paretoml.service.frontier import FrontierRecorder, stored_front, stored_history
from paretoml.service.runner import StudyRunner, spread_over
from paretoml.service.spec import parse_spec
from paretoml.service.storage import open_durable_storage

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray runtime for the module; executors join it instead of starting their own."""
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def synthetic_spec(n_trials: int, **task_options) -> dict:
    return {
        "task": "synthetic",
        "task_options": task_options,
        "knobs": [{"kind": "bitwidth", "choices": [2, 3, 4, 8, 16]}, {"kind": "prune", "high": 0.9}],
        "objectives": [{"name": "fidelity"}, {"name": "model_bytes"}],
        "sampler": {"name": "tpe", "options": {"n_startup_trials": 8}},
        "measure": {"latency_repeats": 1, "latency_warmup": 0},
        "n_trials": n_trials,
        "seed": 1,
    }


def run_study(url: str, spec: dict, workers: int, name: str = "s", **runner_options):
    spec_model = parse_spec(spec)
    storage = open_durable_storage(url)
    with create_executor("ray", spec_model, workers, num_cpus=0.5) as executor:
        runner = StudyRunner.create(spec_model, storage, name, executor)
        for key, value in runner_options.items():
            setattr(runner, key, value)
        runner.on_trial.append(FrontierRecorder(url, runner.study, spec_model.objective_names, runner.model.reference))
        runner.run()
        replaced = getattr(executor, "replaced", 0)
    return optuna.load_study(study_name=name, storage=url), replaced


def test_parallel_study_ends_exactly_at_the_budget(storage_url):
    study, _ = run_study(storage_url, synthetic_spec(40, busy_ms=20), workers=3)
    states = [t.state for t in study.trials]
    assert states.count(TrialState.COMPLETE) == 40 and len(states) == 40
    workers = {t.user_attrs[WORKER_ATTR]["worker"] for t in study.trials}
    assert len(workers) == 3  # every long-lived worker took trials
    # the stored front is the study's Pareto front, with a history of how it grew
    front = stored_front(storage_url, "s")
    assert sorted(p.trial_number for p in front) == sorted(t.number for t in study.best_trials)
    history = stored_history(storage_url, "s")
    assert history and history[-1].front_size == len(front)
    hv = [h.hypervolume for h in history]
    assert all(b >= a - 1e-12 for a, b in zip(hv, hv[1:]))  # a front only improves


def test_a_crashing_worker_fails_only_its_trial(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    faults = {2: "exit", 5: "segfault", 7: "raise"}
    study, replaced = run_study(url, synthetic_spec(12, faults=faults), workers=2)
    trials = {t.number: t for t in study.trials}
    for number, kind in faults.items():
        assert trials[number].state == TrialState.FAIL
        error = trials[number].user_attrs[ERROR_ATTR]
        assert ("synthetic fault" in error) if kind == "raise" else ("worker died" in error), error
    others = [t for n, t in trials.items() if n not in faults]
    assert all(t.state == TrialState.COMPLETE for t in others)
    assert len(others) == 12
    assert replaced == 2  # the two dead actors were replaced; the raise kept its actor


@pytest.mark.parametrize("storage_url", ["postgresql"], indirect=True)
def test_four_workers_on_postgres_lose_nothing_over_300_trials(storage_url):
    study, _ = run_study(storage_url, synthetic_spec(300), workers=4, name="p300")
    trials = study.trials
    numbers = [t.number for t in trials]
    assert numbers == list(range(len(trials))) and len(set(numbers)) == len(numbers)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 300 == len(trials)
    assert all(t.values is not None and len(t.values) == 2 for t in complete)
    assert all(PROVENANCE_ATTR in t.user_attrs for t in complete)


def test_objective_names_are_optunas_metric_names_and_old_studies_get_them_on_resume(tmp_path):
    url = f"sqlite:///{tmp_path / 'names.db'}"
    spec = parse_spec(synthetic_spec(n_trials=2))
    storage = open_durable_storage(url)
    with create_executor("inprocess", spec) as executor:
        StudyRunner.create(spec, storage, "new", executor)
    assert optuna.load_study(study_name="new", storage=url).metric_names == ["fidelity", "model_bytes"]

    # a study made before the names were stored: directions and spec, no metric names
    old = optuna.create_study(study_name="old", storage=url, directions=spec.directions)
    old.set_user_attr(SPEC_ATTR, spec.model_dump(mode="json"))
    assert optuna.load_study(study_name="old", storage=url).metric_names is None
    with create_executor("inprocess", spec) as executor:
        StudyRunner.resume(open_durable_storage(url), "old", executor)
    assert optuna.load_study(study_name="old", storage=url).metric_names == ["fidelity", "model_bytes"]


def test_a_study_too_small_for_the_warm_start_ladder_keeps_both_its_ends():
    ladder = list(range(12))  # allocations from the smallest budget to the 8-bit bytes
    assert spread_over(ladder, 12) == ladder == spread_over(ladder, 20)
    assert spread_over(ladder, 4) == [0, 4, 7, 11]
    assert spread_over(ladder, 2) == [0, 11]
    assert spread_over(ladder, 1) == [0] and spread_over(ladder, 0) == []
