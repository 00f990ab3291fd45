"""The SPSA sampler: convergence on a smooth problem, kinds, seeds, resume, registry."""

from __future__ import annotations

import numpy as np
import optuna

from paretoml.surrogates.registry import create_sampler
from paretoml.surrogates.zeroth_order import CHAIN, ZerothOrderSampler

TARGET = np.array([0.2, 0.7, 0.4, 0.9])


def bowl(trial: optuna.Trial) -> float:
    x = np.array([trial.suggest_float(f"x{i}", 0, 1) for i in range(4)])
    trial.suggest_categorical("mode", ["a", "b"])  # left to the fallback sampler
    return float(np.sum((x - TARGET) ** 2)) + 0.1


def test_converges_on_a_smooth_problem():
    study = optuna.create_study(sampler=ZerothOrderSampler(seed=0, a=0.5, c=0.05))
    study.optimize(bowl, n_trials=120)
    first = study.trials[1].value
    late = [t.value for t in study.trials[-10:]]
    assert max(late) < 0.1 + 0.02 < first
    assert all(CHAIN in t.system_attrs for t in study.trials[1:])
    assert {t.params["mode"] for t in study.trials} <= {"a", "b"}


def test_seeded_and_resumable(tmp_path):
    def make() -> ZerothOrderSampler:
        return ZerothOrderSampler(seed=7, fallback="random")

    whole = optuna.create_study(sampler=make())
    whole.optimize(bowl, n_trials=20)
    url = f"sqlite:///{tmp_path / 's.db'}"
    part = optuna.create_study(storage=url, study_name="s", sampler=make())
    part.optimize(bowl, n_trials=11)
    resumed = optuna.load_study(study_name="s", storage=url, sampler=make())
    resumed.optimize(bowl, n_trials=9)
    # the SPSA part is recomputed from the trials: the continuous knobs continue exactly
    # (the categorical one is the fallback sampler's, whose random stream restarts, as in Optuna)
    def floats(study: optuna.Study) -> list[dict]:
        return [{k: v for k, v in t.params.items() if k.startswith("x")} for t in study.trials]

    assert floats(resumed) == floats(whole)


def test_multi_objective_chains_spread_over_the_front():
    def two(trial: optuna.Trial) -> tuple[float, float]:
        x = np.array([trial.suggest_float(f"x{i}", 0, 1) for i in range(3)])
        return float(np.sum(x**2)) + 0.1, float(np.sum((1 - x) ** 2)) + 0.1

    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=create_sampler("zeroth-order", {"n_chains": 3}, seed=1))
    study.optimize(two, n_trials=60)
    chains = {t.system_attrs[CHAIN] for t in study.trials[1:]}
    assert chains == {0, 1, 2}
    assert len(study.best_trials) >= 3
