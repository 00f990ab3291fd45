"""The pruner registry and the multi-objective rule, on hand-made rungs."""

from __future__ import annotations

import numpy as np
import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

from paretoml.search_space.trial_attrs import RUNGS_ATTR
from paretoml.surrogates.pruners import ParetoRankPruner, PrunerOptionsError, better_front_count, create_pruner, validate_pruner


def test_unknown_names_and_options_are_named():
    with pytest.raises(PrunerOptionsError, match="available: hyperband, median, none, successive-halving, wilcoxon"):
        validate_pruner("asha", {})
    with pytest.raises(PrunerOptionsError, match="has no option 'eta'; options: min_resource, reduction_factor"):
        validate_pruner("successive-halving", {"eta": 3})
    with pytest.raises(PrunerOptionsError, match="option 'reduction_factor'"):
        validate_pruner("hyperband", {"reduction_factor": 1})
    with pytest.raises(PrunerOptionsError, match="option 'p_threshold'"):
        validate_pruner("wilcoxon", {"p_threshold": "0.1"})  # strict: a string is no number
    with pytest.raises(PrunerOptionsError, match="single-objective only"):
        validate_pruner("wilcoxon", {}, n_objectives=2)


@pytest.mark.parametrize(("name", "single"), [
    ("successive-halving", optuna.pruners.SuccessiveHalvingPruner),
    ("hyperband", optuna.pruners.HyperbandPruner),
    ("median", optuna.pruners.MedianPruner),
    ("wilcoxon", optuna.pruners.WilcoxonPruner),
    ("none", optuna.pruners.NopPruner),
])
def test_single_objective_studies_get_optunas_pruners_and_multi_objective_ours(name, single):
    assert isinstance(create_pruner(name, {}, 1, 100), single)
    if name == "wilcoxon":
        return
    multi = create_pruner(name, {}, 2, 100)
    assert isinstance(multi, ParetoRankPruner if name != "none" else optuna.pruners.NopPruner)


def test_better_front_count_ranks_by_non_dominated_sorting():
    losses = np.array([[0, 0], [1, 1], [0, 2], [2, 2], [3, 3]], dtype=float)
    assert [better_front_count(losses, i) for i in range(5)] == [0, 1, 1, 3, 4]


def _study_with_rungs(rows: list[dict[str, float]]) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_metric_names(["accuracy", "model_bytes"])
    for row in rows:
        study.add_trial(optuna.trial.create_trial(
            state=TrialState.PRUNED, params={"x": 0.5}, distributions={"x": FloatDistribution(0, 1)},
            user_attrs={RUNGS_ATTR: {"10": row}}))
    return study


def _candidate(study: optuna.Study, row: dict[str, float]) -> optuna.trial.FrozenTrial:
    trial = study.ask()
    trial.set_user_attr(RUNGS_ATTR, {"10": row})
    return study._storage.get_trial(trial._trial_id)


def test_pareto_rank_pruner_stops_the_dominated_and_keeps_the_front():
    others = [{"accuracy": 0.9, "model_bytes": 100.0}, {"accuracy": 0.8, "model_bytes": 50.0},
              {"accuracy": 0.95, "model_bytes": 200.0}, {"accuracy": 0.5, "model_bytes": 40.0}]
    study = _study_with_rungs(others)
    pruner = ParetoRankPruner(keep_fraction=1 / 3, min_trials=4)
    # on the front: a new trade-off goes on, however few beat it on one objective
    assert not pruner.prune(study, _candidate(study, {"accuracy": 0.85, "model_bytes": 60.0}))
    # dominated by the front, behind the best third: stopped
    assert pruner.prune(study, _candidate(study, {"accuracy": 0.4, "model_bytes": 300.0}))
    # with fewer than min_trials at the rung nobody is stopped
    assert not ParetoRankPruner(1 / 3, min_trials=10).prune(study, _candidate(study, {"accuracy": 0.4,
                                                                                       "model_bytes": 300.0}))
    # a generous keep fraction keeps the same trial
    assert not ParetoRankPruner(1.0, min_trials=4).prune(study, _candidate(study, {"accuracy": 0.4,
                                                                                    "model_bytes": 300.0}))
