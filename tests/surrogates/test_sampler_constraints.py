"""Every registered sampler runs a study whose trials carry constraints the Optuna 5 way
(``Trial.set_constraint``, as the runner sets them), and plain Optuna (``best_trials``,
optuna-dashboard) then tells a budget-breaking trial from a feasible one. No sampler takes
the deprecated ``constraints_func``: Optuna 5 warns on it and removes it in 7."""

from __future__ import annotations

import warnings

import optuna
import pytest
from optuna.trial import TrialState

from paretoml.surrogates.registry import SAMPLERS, create_sampler

BUDGET = 30_000


def _study(tmp_path, name: str, n_trials: int, **options) -> str:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    study = optuna.create_study(study_name=name, storage=url, directions=["maximize", "minimize"],
                                sampler=create_sampler(name, options, seed=0))
    # the case first: a trial of 30,784 bytes against a 30,000 budget, on the front
    study.enqueue_trial({"bits": 8})
    for _ in range(n_trials):
        trial = study.ask()
        bits = trial.suggest_int("bits", 2, 8)
        trial.set_user_attr("model_bytes", 3848 * bits)
        trial.set_constraint("model_bytes", 3848 * bits - BUDGET)  # as the runner stores them: <= 0 is feasible
        study.tell(trial, [float(bits), 3848.0 * bits])
    return url


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_every_registered_sampler_keeps_infeasible_trials_off_optunas_front(tmp_path, name):
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)  # no deprecated constraints_func anywhere
        url = _study(tmp_path, name, n_trials=6)
    study = optuna.load_study(study_name=name, storage=url)  # plain Optuna, our sampler nowhere
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == 6
    assert all(t.constraints == {"model_bytes": t.user_attrs["model_bytes"] - BUDGET} for t in complete)
    infeasible = [t.number for t in complete if t.user_attrs["model_bytes"] > BUDGET]
    assert 0 in infeasible  # the 8-bit trial: 30,784 bytes
    front = study.best_trials
    assert front and not {t.number for t in front} & set(infeasible)
    assert all(t.user_attrs["model_bytes"] <= BUDGET for t in front)


def test_an_xgboost_study_past_its_startup_keeps_infeasible_trials_off_optunas_front(tmp_path):
    # past its start-up trials: the model path too, which reads the constraints off the trials
    url = _study(tmp_path, "xgboost", n_trials=5, n_startup_trials=2, n_estimators=5, n_candidates=50)
    study = optuna.load_study(study_name="xgboost", storage=url)
    assert study.trials[0].user_attrs["model_bytes"] == 30_784 and study.trials[0].values[0] == 8.0
    assert 0 not in {t.number for t in study.best_trials}
    assert all(t.user_attrs["model_bytes"] <= BUDGET for t in study.best_trials)
