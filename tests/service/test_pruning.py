"""Early stopping end to end: real digits-cnn fine-tuning, in process and on a Ray pool.

The task is built to need a pruner: the fine-tuning learning rate is searched up to 3.0,
where a few Adam steps wreck the network (accuracy 0.10 from the first rung on), so every
pruner has trials that are plainly bad at their first rung.
"""

from __future__ import annotations

import optuna
import pytest
import ray
from optuna.trial import TrialState

from paretoml.search_space.trial_attrs import (
    PROVENANCE_ATTR,
    RUNGS_ATTR,
    RUNG_UNIT_ATTR,
    STOPPED_AT_ATTR,
    TEST_ACCURACY_ATTR,
    VALIDATION_SAMPLES_ATTR,
    WORKER_ATTR,
)
from paretoml.service.executors import create_executor
from paretoml.service.frontier import FrontierRecorder, stored_front
from paretoml.service.runner import StudyRunner
from paretoml.service.spec import parse_spec
from paretoml.service.storage import open_durable_storage

pytestmark = pytest.mark.slow

STEPS = 24


def digits_spec(pruner: dict, objectives: list[str], n_trials: int = 10) -> dict:
    return {
        "task": "digits-cnn",
        "knobs": [{"kind": "bitwidth", "choices": [4, 8]},
                  {"kind": "learning_rate", "base_lr": 1e-3, "base_lr_range": [1e-4, 3.0]}],
        "objectives": [{"name": n} for n in objectives],
        "sampler": {"name": "random"},
        "finetune": {"steps": STEPS},
        "pruner": pruner,
        "measure": {"latency_repeats": 1, "latency_warmup": 0},
        "n_trials": n_trials,
        "seed": 4,
    }


def run(url: str, spec: dict, kind: str = "inprocess", workers: int = 1) -> optuna.Study:
    model = parse_spec(spec)
    with create_executor(kind, model, workers, num_cpus=0.5) as executor:
        runner = StudyRunner.create(model, open_durable_storage(url), "p", executor)
        runner.on_trial.append(FrontierRecorder(url, runner.study, model.objective_names, runner.model.reference))
        runner.run()
    return optuna.load_study(study_name="p", storage=url)


def check_pruned(study: optuna.Study, url: str, rung_steps: list[int], last: int = STEPS) -> None:
    """Pruned trials stopped at a rung, complete ones ran every rung and the full trial
    (step ``last``), and no pruned trial is on the front."""
    trials = study.get_trials()
    pruned = [t for t in trials if t.state == TrialState.PRUNED]
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert pruned, [(t.number, t.intermediate_values) for t in trials]
    assert len(pruned) + len(complete) == len(trials)  # pruned trials count towards the budget
    for t in pruned:  # stopped at a rung: its curve ends there, and it never ran the full fine-tune
        stop = t.user_attrs[STOPPED_AT_ATTR]
        assert stop in rung_steps and max(t.intermediate_values) == stop
        assert last not in t.intermediate_values and PROVENANCE_ATTR not in t.user_attrs
        assert set(t.user_attrs[RUNGS_ATTR]) == {str(s) for s in rung_steps if s <= stop}
    for t in complete:  # a complete trial's curve runs from the first rung to the full fine-tune
        assert sorted(t.intermediate_values) == rung_steps + [last]
    # never on the front: neither Optuna's nor the stored one
    numbers = {t.number for t in pruned}
    best = study.best_trials if len(study.directions) > 1 else [study.best_trial]
    assert not numbers & {t.number for t in best}
    assert not numbers & {p.trial_number for p in stored_front(url, "p")}


@pytest.mark.parametrize(("pruner", "objectives", "rung_steps"), [
    ({"name": "successive-halving", "options": {"min_trials": 3}}, ["accuracy", "model_bytes"], [6, 12]),
    ({"name": "hyperband", "options": {"min_trials": 3}}, ["accuracy", "model_bytes"], [6, 12]),
    ({"name": "median", "options": {"n_startup_trials": 3}}, ["accuracy", "model_bytes"], [6, 12]),
    ({"name": "successive-halving", "options": {"min_resource": 6}}, ["accuracy"], [6, 12]),
    ({"name": "median", "options": {"n_startup_trials": 2}}, ["accuracy"], [6, 12]),
    ({"name": "wilcoxon", "options": {"n_startup_steps": 2}, "rungs": [0.125, 0.25, 0.375, 0.5, 0.625, 0.75, 0.875]},
     ["accuracy"], [3, 6, 9, 12, 15, 18, 21]),
], ids=["sh-multi", "hyperband-multi", "median-multi", "sh-single", "median-single", "wilcoxon-single"])
def test_each_pruner_stops_bad_trials_and_none_reaches_the_front(tmp_path, pruner, objectives, rung_steps):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    study = run(url, digits_spec(pruner, objectives))
    check_pruned(study, url, rung_steps)


def test_tpe_learns_from_pruned_trials_of_a_multi_objective_study(tmp_path):
    """Optuna's TPE ranks pruned trials by study.direction, which a multi-objective study
    lacks; ours is shown the rung metric's direction, so suggestions go on after pruning."""
    url = f"sqlite:///{tmp_path / 'p.db'}"
    spec = digits_spec({"name": "successive-halving", "options": {"min_trials": 3}}, ["accuracy", "model_bytes"],
                       n_trials=12)
    spec["sampler"] = {"name": "tpe", "options": {"n_startup_trials": 3, "multivariate": True}}
    study = run(url, spec)
    assert not [t for t in study.trials if t.state == TrialState.FAIL]
    pruned_before_last = [t for t in study.trials if t.state == TrialState.PRUNED and t.number < len(study.trials) - 1]
    assert pruned_before_last  # later trials were suggested by TPE with pruned trials in the history
    check_pruned(study, url, [6, 12])


def test_without_a_pruner_nothing_is_stopped(tmp_path):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    study = run(url, digits_spec({"name": "none"}, ["accuracy", "model_bytes"], n_trials=4))
    assert all(t.state == TrialState.COMPLETE and not t.intermediate_values for t in study.trials)


@pytest.fixture()
def local_ray():
    """A local Ray runtime for one test; the pool joins it."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()


def test_ray_workers_wait_for_the_decision_between_rungs(tmp_path, local_ray):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    study = run(url, digits_spec({"name": "successive-halving", "options": {"min_trials": 3}},
                                 ["accuracy", "model_bytes"], n_trials=12), kind="ray", workers=2)
    check_pruned(study, url, [6, 12])
    assert len({t.user_attrs[WORKER_ATTR]["worker"] for t in study.trials}) == 2


def evaluation_spec(pruner: dict, objectives: list[str], n_trials: int = 10) -> dict:
    """No fine-tuning: the rungs are prefixes of the validation split. 2-bit layers wreck the
    network, which the first quarter of the split already shows."""
    return {
        "task": "digits-cnn",
        "knobs": [{"kind": "bitwidth", "choices": [2, 8]}],
        "objectives": [{"name": n} for n in objectives],
        "sampler": {"name": "random"},
        "pruner": {**pruner, "over": "evaluation", "rungs": [0.25, 0.5]},
        # 2 bits on every layer: the CPU has no 2-bit kernel, so runtime mode would drop it
        "deploy": {"mode": "runtime", "emulate": True},
        "measure": {"latency_repeats": 1, "latency_warmup": 0},
        "n_trials": n_trials,
        "seed": 4,
    }


def validation_steps(study: optuna.Study) -> tuple[list[int], int]:
    """The prefix sizes of the rungs and the full split, as the worker counted them."""
    total = next(t.user_attrs[VALIDATION_SAMPLES_ATTR] for t in study.trials if t.state == TrialState.COMPLETE)
    return [-(-total // 4), -(-total // 2)], total


@pytest.mark.parametrize(("pruner", "objectives"), [
    ({"name": "successive-halving", "options": {"min_trials": 3}}, ["accuracy", "model_bytes"]),
    ({"name": "median", "options": {"n_startup_trials": 2}}, ["accuracy"]),
], ids=["sh-multi", "median-single"])
def test_rungs_over_evaluation_size_stop_bad_trials_without_fine_tuning(tmp_path, pruner, objectives):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    study = run(url, evaluation_spec(pruner, objectives))
    steps, total = validation_steps(study)
    check_pruned(study, url, steps, last=total)
    assert all(t.user_attrs[RUNG_UNIT_ATTR] == "validation samples" for t in study.trials)
    for t in study.trials:  # a pruned trial was never measured in full: no latency, no test accuracy
        assert (t.state == TrialState.PRUNED) == (TEST_ACCURACY_ATTR not in t.user_attrs)


def test_ray_workers_wait_for_the_decision_between_evaluation_rungs(tmp_path, local_ray):
    url = f"sqlite:///{tmp_path / 'p.db'}"
    study = run(url, evaluation_spec({"name": "successive-halving", "options": {"min_trials": 3}},
                                     ["accuracy", "model_bytes"], n_trials=12), kind="ray", workers=2)
    steps, total = validation_steps(study)
    check_pruned(study, url, steps, last=total)
    assert len({t.user_attrs[WORKER_ATTR]["worker"] for t in study.trials}) == 2
