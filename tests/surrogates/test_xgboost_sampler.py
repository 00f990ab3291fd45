"""The XGBoost surrogate sampler in plain Optuna: kinds, seeds, objectives, constraints, resume."""

from __future__ import annotations

import numpy as np
import optuna
import pytest

from paretoml.surrogates.registry import create_sampler
from paretoml.surrogates.xgboost_sampler import XGBoostSampler


def mixed(trial: optuna.Trial, n_objectives: int) -> tuple[float, ...]:
    x = trial.suggest_float("x", -2, 2)
    lr = trial.suggest_float("lr", 1e-4, 1e-1, log=True)
    k = trial.suggest_int("k", 1, 9, step=2)
    bits = trial.suggest_categorical("bits", [2, 4, 8])
    act = trial.suggest_categorical("act", ["relu", "gelu", "tanh"])
    base = (x - 0.5) ** 2 + abs(np.log10(lr) + 2) + (act != "gelu")
    values = (base + k / 10, 8 / bits + x, abs(k - 5) - x)
    return values[:n_objectives]


def run(n_objectives: int, seed: int = 0, n: int = 18, **kwargs) -> optuna.Study:
    sampler = XGBoostSampler(seed=seed, n_startup_trials=6, n_candidates=300, n_estimators=20, **kwargs)
    study = optuna.create_study(directions=["minimize"] * n_objectives, sampler=sampler)
    study.optimize(lambda t: mixed(t, n_objectives), n_trials=n)
    return study


@pytest.mark.parametrize("n_objectives", [1, 2, 3])
def test_respects_every_distribution_kind(n_objectives):
    study = run(n_objectives)
    assert len(study.trials) == 18
    for t in study.trials:
        assert -2 <= t.params["x"] <= 2 and 1e-4 <= t.params["lr"] <= 1e-1
        assert t.params["k"] in (1, 3, 5, 7, 9)
        assert t.params["bits"] in (2, 4, 8) and t.params["act"] in ("relu", "gelu", "tanh")


def test_seeds_reproduce_and_differ():
    a, b, c = run(2, seed=3), run(2, seed=3), run(2, seed=4)
    assert [t.params for t in a.trials] == [t.params for t in b.trials]
    assert [t.params for t in a.trials] != [t.params for t in c.trials]


def test_a_resumed_study_continues_as_if_never_stopped(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"

    def sampler() -> XGBoostSampler:
        return XGBoostSampler(seed=1, n_startup_trials=5, n_candidates=200, n_estimators=15)

    whole = optuna.create_study(directions=["minimize"] * 2, sampler=sampler())
    whole.optimize(lambda t: mixed(t, 2), n_trials=14)
    first = optuna.create_study(storage=url, study_name="s", directions=["minimize"] * 2, sampler=sampler())
    first.optimize(lambda t: mixed(t, 2), n_trials=8)
    resumed = optuna.load_study(study_name="s", storage=url, sampler=sampler())  # a new process, new sampler
    resumed.optimize(lambda t: mixed(t, 2), n_trials=6)
    assert [t.params for t in resumed.trials] == [t.params for t in whole.trials]


def test_prefers_feasible_candidates():
    def objective(trial: optuna.Trial) -> tuple[float, float]:
        x = trial.suggest_float("x", -2, 2)
        trial.set_constraint("x", x)  # feasible only for x <= 0
        return -x, x**2  # both objectives pull towards infeasible x > 0

    sampler = XGBoostSampler(seed=0, n_startup_trials=8, n_candidates=400, n_estimators=20)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=30)
    late = [t.params["x"] for t in study.trials[8:]]
    assert np.mean(np.array(late) <= 0) >= 0.8


def test_beats_random_on_zdt1_at_equal_trials():
    def zdt1(trial: optuna.Trial) -> tuple[float, float]:
        x = np.array([trial.suggest_float(f"x{i}", 0, 1) for i in range(6)])
        g = 1 + 9 * x[1:].mean()
        return x[0], g * (1 - np.sqrt(x[0] / g))

    from paretoml.surrogates.pareto import hypervolume

    def hv(study: optuna.Study) -> float:
        return hypervolume(np.array([t.values for t in study.best_trials]), np.array([1.1, 11.0]))

    results = {}
    for name in ("xgboost", "random"):
        scores = []
        for seed in range(3):
            sampler = create_sampler(name, {"n_candidates": 500, "n_estimators": 30} if name == "xgboost" else {},
                                     seed=seed)
            study = optuna.create_study(directions=["minimize"] * 2, sampler=sampler)
            study.optimize(zdt1, n_trials=40)
            scores.append(hv(study))
        results[name] = np.median(scores)
    assert results["xgboost"] > results["random"] + 0.3, results


def _concurrent_suggestions(sampler: XGBoostSampler, n_running: int = 4) -> np.ndarray:
    """Encoded suggestions of ``n_running`` trials asked at once (none told), after 20
    completed trials of a smooth one-objective problem whose optimum all of them chase."""
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: sum((t.suggest_float(f"x{i}", 0, 1) - 0.3) ** 2 for i in range(4)), n_trials=20)
    asked = [study.ask() for _ in range(n_running)]
    for trial in asked:
        for i in range(4):
            trial.suggest_float(f"x{i}", 0, 1)
    return np.array([[t.params[f"x{i}"] for i in range(4)] for t in asked])


def test_trials_asked_at_once_keep_apart():
    # parallel workers each ask while the others' trials run: the sampler pushes a new
    # suggestion out of a radius around running trials, so a batch does not collapse
    radius = 0.05 * np.sqrt(4)

    def closest(points: np.ndarray) -> float:
        return min(np.linalg.norm(a - b) for i, a in enumerate(points) for b in points[i + 1:])

    kwargs = {"seed": 3, "n_startup_trials": 6, "n_candidates": 500, "n_estimators": 20}
    assert closest(_concurrent_suggestions(XGBoostSampler(**kwargs))) >= radius

    class Blind(XGBoostSampler):  # the same sampler without its crowding term
        @staticmethod
        def _crowding(taken: np.ndarray, candidates: np.ndarray) -> np.ndarray:
            return np.zeros(len(candidates))

    assert closest(_concurrent_suggestions(Blind(**kwargs))) < radius  # what the test guards against


@pytest.mark.parametrize("threads", [1, 3])
def test_fits_within_the_process_thread_budget(threads):
    """Not all the machine's cores (it was min(4, cores)): the sampler's process shares them."""
    from paretoml.objectives.threads import apply_thread_budget, restore_threads

    state = apply_thread_budget(threads)
    try:
        assert XGBoostSampler(seed=0)._regressor().get_params()["n_jobs"] == threads
        study = run(2, n=8)  # and the fits of a real study run under it
        assert len(study.trials) == 8
    finally:
        restore_threads(state)
