"""The XGBoost sampler spends no trial twice on one configuration, and learns from failures."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import optuna
import pytest
from optuna.trial import TrialState

from paretoml.search_space.encoding import VectorEncoding
from paretoml.search_space.trial_attrs import RETRY_OF_ATTR
from paretoml.surrogates.trial_history import read_history
from paretoml.surrogates.xgboost_sampler import XGBoostSampler

# a Quantune-style space: every knob categorical, 4 x 2 x 3 x 2 = 48 configurations
KNOBS = {
    "profile": ["minmax", "entropy", "percentile", "mse"],
    "granularity": ["tensor", "channel"],
    "clipping": ["none", "99.9", "99.99"],
    "scheme": ["symmetric", "asymmetric"],
}
CONFIGS = list(itertools.product(*KNOBS.values()))
TABLE = dict(zip(CONFIGS, np.random.default_rng(7).normal(0.9, 0.03, len(CONFIGS))))


def suggest(trial: optuna.Trial) -> tuple[str, ...]:
    return tuple(trial.suggest_categorical(name, choices) for name, choices in KNOBS.items())


def sampler(**kwargs) -> XGBoostSampler:
    return XGBoostSampler(seed=kwargs.pop("seed", 0), n_estimators=15, n_candidates=200, **kwargs)


def configs(study: optuna.Study, states=(TrialState.COMPLETE, TrialState.FAIL)) -> list[tuple]:
    return [tuple(t.params.values()) for t in study.get_trials(states=states)]


def test_no_repeat_over_the_whole_categorical_space_then_one_warning():
    study = optuna.create_study(direction="maximize", sampler=sampler())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no exhaustion warning while unseen configurations remain
        study.optimize(lambda t: TABLE[suggest(t)], n_trials=48)
    assert len(set(configs(study))) == 48
    with pytest.warns(UserWarning, match="all 48 configurations") as caught:
        study.optimize(lambda t: TABLE[suggest(t)], n_trials=3)  # falls back to repeats, says so once
    assert sum("configurations" in str(w.message) for w in caught) == 1 and len(study.trials) == 51


def test_no_repeat_when_the_space_is_too_large_to_enumerate():
    # 6^3 x 5 = 1,080 configurations > n_candidates: candidates are drawn, snapped and filtered
    def objective(trial: optuna.Trial) -> float:
        bits = [trial.suggest_categorical(f"b{i}", [2, 3, 4, 6, 8, 16]) for i in range(3)]
        k = trial.suggest_int("k", 1, 9, step=2)
        return sum((b - 4) ** 2 for b in bits) + abs(k - 5)

    study = optuna.create_study(sampler=sampler(n_startup_trials=5))
    study.optimize(objective, n_trials=40)
    assert len(set(configs(study))) == 40


def test_noisy_objectives_may_repeat_and_do_not_warn():
    def objective(trial: optuna.Trial) -> float:
        return trial.suggest_categorical("a", [0, 1]) + trial.suggest_categorical("b", ["x", "y"]).count("x")

    study = optuna.create_study(sampler=sampler(n_startup_trials=2, noisy_objectives=True))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        study.optimize(objective, n_trials=10)
    assert len(set(configs(study))) < 10


def test_failed_configurations_are_not_proposed_again():
    broken = {c for c in CONFIGS if c[0] == "entropy" or c[1:3] == ("channel", "none")}  # 12 + 6 - 2 = 16

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial)
        if config in broken:
            raise RuntimeError("calibration diverged")
        return TABLE[config]

    study = optuna.create_study(direction="maximize", sampler=sampler(seed=2))
    study.optimize(objective, n_trials=40, catch=(RuntimeError,))
    failed = configs(study, (TrialState.FAIL,))
    assert failed and len(set(configs(study))) == 40  # no configuration twice, failed ones included
    assert set(failed) <= broken


def _late_failure_rate(learn: bool) -> float:
    """Share of trials 16-40 that fail, on a problem whose optimum lies past a failure wall."""
    class Blind(XGBoostSampler):  # the same sampler, told nothing about failures
        def _failure_risk(self, ok, failed, candidates):
            return np.zeros(len(candidates))

    def objective(trial: optuna.Trial) -> float:
        x, y = trial.suggest_float("x", 0, 1), trial.suggest_float("y", 0, 1)
        if x > 0.6:
            raise RuntimeError("out of memory at this size")
        return -x + (y - 0.5) ** 2

    kind = XGBoostSampler if learn else Blind
    rates = []
    for seed in range(3):
        study = optuna.create_study(sampler=kind(seed=seed, n_startup_trials=8, n_estimators=20, n_candidates=300))
        study.optimize(objective, n_trials=40, catch=(RuntimeError,))
        rates.append(np.mean([t.state == TrialState.FAIL for t in study.trials[16:]]))
    return float(np.mean(rates))


def test_keeps_away_from_the_neighbourhood_of_failures():
    learnt, blind = _late_failure_rate(True), _late_failure_rate(False)
    assert learnt <= 0.25 and learnt < blind - 0.2, (learnt, blind)


def test_an_interrupted_trial_queued_again_is_no_failure_sample():
    study = optuna.create_study()
    dist = optuna.distributions.FloatDistribution(0, 1)
    for x, state in ((0.1, TrialState.COMPLETE), (0.2, TrialState.FAIL), (0.3, TrialState.FAIL)):
        study.add_trial(optuna.trial.create_trial(params={"x": x}, distributions={"x": dist}, state=state,
                                                  value=1.0 if state == TrialState.COMPLETE else None))
    study.enqueue_trial({"x": 0.3}, user_attrs={RETRY_OF_ATTR: 2})  # what the runner does on an interrupt
    study.enqueue_trial({"x": 0.4})  # queued, not yet running: taken all the same
    current = study.ask()  # the retry of trial 2 (x = 0.3)
    history = read_history(study, study.trials[current.number], VectorEncoding({"x": dist}))
    assert history.failed_x[:, 0].tolist() == [pytest.approx(0.2)]  # the retried trial 2 is not counted
    assert sorted(np.round(history.taken[:, 0], 6).tolist()) == [0.1, 0.2, 0.3, 0.4]


def test_resume_is_identical_with_failures_and_a_discrete_space(tmp_path):
    url = f"sqlite:///{tmp_path / 's.db'}"

    def objective(trial: optuna.Trial) -> float:
        config = suggest(trial)
        if config[0] == "entropy":
            raise RuntimeError("diverged")
        return TABLE[config]

    whole = optuna.create_study(direction="maximize", sampler=sampler(seed=5))
    whole.optimize(objective, n_trials=24, catch=(RuntimeError,))
    first = optuna.create_study(storage=url, study_name="s", direction="maximize", sampler=sampler(seed=5))
    first.optimize(objective, n_trials=13, catch=(RuntimeError,))
    resumed = optuna.load_study(study_name="s", storage=url, sampler=sampler(seed=5))
    resumed.optimize(objective, n_trials=11, catch=(RuntimeError,))
    assert [t.params for t in resumed.trials] == [t.params for t in whole.trials]


def test_noisy_objectives_is_a_registry_option():
    from paretoml.surrogates.registry import SamplerOptionsError, create_sampler, validate_sampler

    assert create_sampler("xgboost", {"noisy_objectives": True}, seed=0).noisy_objectives is True
    assert create_sampler("xgboost", {}, seed=0).noisy_objectives is False
    with pytest.raises(SamplerOptionsError, match="noisy_objectives"):
        validate_sampler("xgboost", {"noisy_objectives": "sometimes"})
