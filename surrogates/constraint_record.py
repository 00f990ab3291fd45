"""Optuna's ``constraints`` system attribute, written after each trial as Optuna's own
samplers write it (TPE, NSGA-II, GP): ``optuna.load_study(...).best_trials``, Optuna's plots
and optuna-dashboard read feasibility from it, and count a trial without it as feasible.

Every registered sampler records it when the study has constraints: those of Optuna do so
themselves; ours call :func:`record_constraints` from ``after_trial``. Optuna's private helper
is reached through ``optuna_compat``, so an Optuna upgrade breaks there only.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optuna
from optuna.samplers import RandomSampler
from optuna.trial import FrozenTrial, TrialState

from paretoml.surrogates.optuna_compat import process_constraints_after_trial

ConstraintsFunc = Callable[[FrozenTrial], Sequence[float]]


def record_constraints(constraints_func: ConstraintsFunc | None, study: optuna.Study, trial: FrozenTrial,
                       state: TrialState) -> None:
    """Store ``constraints_func(trial)`` on a complete or pruned trial (nothing without a
    function, as Optuna's samplers do)."""
    if constraints_func is not None:
        process_constraints_after_trial(constraints_func, study, trial, state)


class ConstraintRecordingRandomSampler(RandomSampler):
    """Optuna's random sampler, which takes no ``constraints_func``, recording the constraints
    like the others: random search still has to say which of its trials were feasible.

    Args:
        seed: as RandomSampler's.
        constraints_func: Optuna's contract: a trial's constraint values, feasible when all <= 0.
    """

    def __init__(self, *, seed: int | None = None, constraints_func: ConstraintsFunc | None = None) -> None:
        super().__init__(seed=seed)
        self._constraints_func = constraints_func

    def after_trial(self, study: optuna.Study, trial: FrozenTrial, state: TrialState, values: Any) -> None:
        record_constraints(self._constraints_func, study, trial, state)
        super().after_trial(study, trial, state, values)
