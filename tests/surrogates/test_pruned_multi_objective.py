"""Every registered sampler runs a multi-objective study whose pruner stops trials.

A PRUNED trial of a multi-objective study has no values: a sampler must neither crash on it
nor learn from it as if it were complete. The study is plain Optuna (the samplers are
Optuna samplers) with the service's multi-objective pruner (surrogates/pruners.py), so a
sampler is tested exactly as the runner uses it.
"""

from __future__ import annotations

import warnings

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from paretoml.search_space.encoding import VectorEncoding
from paretoml.search_space.trial_attrs import RUNGS_ATTR
from paretoml.surrogates.pruners import ParetoRankPruner
from paretoml.surrogates.registry import SAMPLERS, create_sampler
from paretoml.surrogates.trial_history import read_history

N_TRIALS = 14
EAGER = {"xgboost": {"n_startup_trials": 3, "n_candidates": 100, "n_estimators": 10}}


def run_study(study: optuna.Study, pruner: ParetoRankPruner, n_trials: int) -> None:
    """Ask/tell as the runner does (Optuna's ``Trial.report`` is single-objective only): each
    rung is stored as an intermediate value plus every measurable objective, then the pruner
    decides. Error vs size: high ``noise`` is bad from the first rung on."""
    storage = study._storage
    for _ in range(n_trials):
        trial = study.ask()
        x = trial.suggest_float("x", 0.0, 1.0)
        noise = trial.suggest_float("noise", 0.0, 1.0)
        size, rungs, stopped = x * 100.0, {}, False
        for step in (1, 2):
            error = (1.0 - x) ** 2 + noise * (3 - step)
            rungs[str(step)] = {"error": error, "size": size}
            trial.set_user_attr(RUNGS_ATTR, dict(rungs))
            storage.set_trial_intermediate_value(trial._trial_id, step, error)
            if pruner.prune(study, storage.get_trial(trial._trial_id)):
                study.tell(trial, state=TrialState.PRUNED)
                stopped = True
                break
        if not stopped:
            study.tell(trial, [(1.0 - x) ** 2 + noise, size])


def make_study(name: str) -> optuna.Study:
    study = optuna.create_study(directions=["minimize", "minimize"],
                                sampler=create_sampler(name, EAGER.get(name, {}), seed=3))
    study.set_metric_names(["error", "size"])
    return study


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_a_pruned_multi_objective_study_runs_to_completion(name):
    study = make_study(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # experimental-feature warnings of some samplers
        run_study(study, ParetoRankPruner(keep_fraction=1 / 3, min_trials=2), N_TRIALS)
    states = [t.state for t in study.trials]
    assert len(states) == N_TRIALS and set(states) <= {TrialState.COMPLETE, TrialState.PRUNED}, states
    pruned = {t.number for t in study.trials if t.state == TrialState.PRUNED}
    assert pruned and len(pruned) < N_TRIALS
    assert not pruned & {t.number for t in study.best_trials}  # never on the front
    # the sampler went on suggesting after pruned trials were in the history
    assert min(pruned) < N_TRIALS - 1


def test_the_xgboost_history_keeps_pruned_trials_out_of_its_training_set():
    """Pruned configurations are taken (not suggested again) but never trained on."""
    study = make_study("xgboost")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run_study(study, ParetoRankPruner(keep_fraction=1 / 3, min_trials=2), N_TRIALS)
    pruned = [t for t in study.trials if t.state == TrialState.PRUNED]
    complete = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert pruned and complete
    probe = study.ask()
    history = read_history(study, study._storage.get_trial(probe._trial_id),
                           VectorEncoding(complete[-1].distributions))
    assert [t.number for t in history.complete] == [t.number for t in complete]
    assert len(history.taken) == len(study.trials) - 1  # the pruned ones too, all but the probe
    assert np.isfinite(np.array([t.values for t in history.complete], dtype=float)).all()
